//! The model as the slides show it: VGG16's table, a dense head, freezing, training.

use aula::prelude::*;

#[test]
fn vgg16_summary_matches_keras() {
    let conv_base = VGG16("none", false, (150, 150, 3)).unwrap();
    let summary = conv_base.summary();
    assert_eq!(summary.total_params, 14_714_688);
    assert_eq!(summary.trainable_params, 14_714_688);
    assert_eq!(conv_base.output_shape().unwrap(), [4, 4, 512]);
    let table = summary.to_string();
    for line in [
        "input_1 (InputLayer)         (None, 150, 150, 3)       0",
        "block1_conv1 (Conv2D)        (None, 150, 150, 64)      1792",
        "block5_conv3 (Conv2D)        (None, 9, 9, 512)         2359808",
        "block5_pool (MaxPooling2D)   (None, 4, 4, 512)         0",
        "Total params: 14,714,688",
        "Non-trainable params: 0",
    ] {
        assert!(table.contains(line), "missing {line:?} in\n{table}");
    }
    // The real forward pass gives the shape the table promises (NCHW inside).
    let x = Tensor::rand([2, 3, 150, 150], (Kind::Float, conv_base.device()));
    assert_eq!(conv_base.forward_t(&x, false).size(), [2, 512, 4, 4]);
}

#[test]
fn vgg16_rejects_bad_shapes() {
    let e = VGG16("none", false, (150, 150, 1)).unwrap_err().to_string();
    assert!(e.contains("RGB"), "{e}");
    let e = VGG16("none", true, (150, 150, 3)).unwrap_err().to_string();
    assert!(e.contains("224"), "{e}");
    let e = VGG16("none", false, (16, 16, 3)).unwrap_err().to_string();
    assert!(e.contains("32"), "{e}");
}

#[test]
fn include_top_adds_keras_classifier() {
    let model = VGG16("none", true, (224, 224, 3)).unwrap();
    assert_eq!(model.count_params(), 138_357_544);
    assert_eq!(model.output_shape().unwrap(), [1000]);
    let names = model.layer_names();
    assert_eq!(&names[names.len() - 4..], ["flatten", "fc1", "fc2", "predictions"]);
}

fn dense_head() -> Sequential {
    let mut model = Sequential::new("sequential");
    model.add(Dense(256).activation("relu").input_dim(4 * 4 * 512)).unwrap();
    model.add(Dropout(0.5)).unwrap();
    model.add(Dense(1).activation("sigmoid")).unwrap();
    model
}

#[test]
fn dense_head_as_on_the_slide() {
    let model = dense_head();
    assert_eq!(model.layer_names(), ["dense_1", "dropout_1", "dense_2"]);
    assert_eq!(model.count_params(), 8192 * 256 + 256 + 257);
    let e = Sequential::new("s").add(Dense(3)).map(|_| ()).unwrap_err().to_string();
    assert!(e.contains("input_dim"), "{e}");
    let e = Sequential::new("s").add(Dense(3).activation("tanhh").input_dim(2)).map(|_| ()).unwrap_err().to_string();
    assert!(e.contains("tanhh"), "{e}");
}

/// Freezing as in "Alternativa 2": 30 trainable weight tensors, 4 after
/// `conv_base.trainable = False`, and the change waits for `compile`.
#[test]
fn freezing_the_conv_base() {
    let conv_base = VGG16("none", false, (32, 32, 3)).unwrap();
    let mut model = Sequential::new("sequential");
    model.add(conv_base).unwrap();
    model.add(Flatten()).unwrap();
    model.add(Dense(256).activation("relu")).unwrap();
    model.add(Dense(1).activation("sigmoid")).unwrap();
    assert_eq!(model.trainable_weights(), 30);
    model.compile(RMSprop::new(2e-5), "binary_crossentropy", &["acc"]).unwrap();
    model.get_layer("vgg16").unwrap().trainable = false;
    assert_eq!(model.trainable_weights(), 4);
    assert!(model.trainable_changes_pending());
    model.compile(RMSprop::new(2e-5), "binary_crossentropy", &["acc"]).unwrap();
    assert!(!model.trainable_changes_pending());
    let summary = model.summary();
    assert_eq!(summary.non_trainable_params, 14_714_688);
    assert_eq!(summary.trainable_params, 512 * 256 + 256 + 257);
    assert!(summary.to_string().contains("vgg16 (Model)"));
}

#[test]
fn fit_needs_compile_and_matching_labels() {
    let (x, y) = (Tensor::randn([10, 8192], (Kind::Float, Device::Cpu)), Tensor::zeros([10], (Kind::Float, Device::Cpu)));
    let mut model = dense_head();
    let e = model.fit(&x, &y, 1, 5, None).unwrap_err().to_string();
    assert!(e.contains("compile"), "{e}");
    model.compile(RMSprop::new(1e-3), "binary_crossentropy", &["acc"]).unwrap();
    let e = model.fit(&x, &y.narrow(0, 0, 5), 1, 5, None).unwrap_err().to_string();
    assert!(e.contains("labels"), "{e}");
    let e = model.compile(RMSprop::new(1e-3), "mse", &["acc"]).unwrap_err().to_string();
    assert!(e.contains("mse"), "{e}");
}
