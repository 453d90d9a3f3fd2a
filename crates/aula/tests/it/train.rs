//! Training the dense head: it learns, and the same seed gives the same run.
//! In a process of its own (`run_in_own_process`): libtorch's generator is
//! process-wide, and tests of other modules running in parallel threads would draw from it.

use aula::prelude::*;

fn dense_head() -> Sequential {
    let mut model = Sequential::new("sequential");
    model.add(Dense(256).activation("relu").input_dim(4 * 4 * 512)).unwrap();
    model.add(Dropout(0.5)).unwrap();
    model.add(Dense(1).activation("sigmoid")).unwrap();
    model
}

/// Two well separated blobs: the head must learn them, the same way twice.
/// Two well separated blobs: the head must learn them, the same way twice.
fn blobs(n: i64) -> (Tensor, Tensor) {
    let y = Tensor::arange(n, (Kind::Float, Device::Cpu)).remainder(2);
    let x = Tensor::randn([n, 8192], (Kind::Float, Device::Cpu)) + y.view([-1, 1]) * 0.5;
    (x, y)
}

#[test]
#[ignore = "in its own process: see run_in_own_process"]
fn fit_learns_and_is_deterministic() {
    let run = || {
        aula::train::seed(3);
        let (x, y) = blobs(200);
        let (xv, yv) = blobs(100);
        let mut model = dense_head();
        model.compile(RMSprop::new(1e-3), "binary_crossentropy", &["acc"]).unwrap();
        let history = model.fit(&x, &y, 4, 20, Some((&xv, &yv))).unwrap();
        (history, model.evaluate(&xv, &yv, 20).unwrap())
    };
    let (h1, e1) = run();
    let (h2, e2) = run();
    assert_eq!(h1, h2);
    assert_eq!(e1, e2);
    assert_eq!(h1.epochs(), 4);
    assert!(h1.val_acc[3] > 0.9, "{h1:?}");
    assert!(h1.loss[3] < h1.loss[0], "{h1:?}");
}

