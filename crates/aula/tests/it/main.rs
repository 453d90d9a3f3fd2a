//! aula's integration tests, one test binary: each of these modules used to be a
//! binary of its own, and each binary links libtorch (seconds of linking apiece on
//! 2 cores). Modules that need something process-wide to themselves (libtorch's
//! random generator, `AULA_CACHE`, `KERAS_HOME`, the interrupt flag) keep a process
//! of their own: their tests are `#[ignore]`d here and run by the tests at the
//! bottom of this file in a child process of this binary ([`fixtures::run_in_own_process`]).

mod fixtures;

mod applications;
mod data;
mod efficientnet_lite;
mod features;
mod fit_generator;
mod imagenet;
mod interrupt;
mod mobilenet_v2;
mod model;
mod train;
mod weights;

use fixtures::run_in_own_process;

#[test]
fn features_in_their_own_process() {
    run_in_own_process("features::");
}

#[test]
fn fit_generator_in_its_own_process() {
    run_in_own_process("fit_generator::");
}

#[test]
fn interrupt_in_its_own_process() {
    run_in_own_process("interrupt::");
}

#[test]
fn train_in_its_own_process() {
    run_in_own_process("train::");
}

#[test]
fn imagenet_weights_lookup_in_its_own_process() {
    run_in_own_process("weights::imagenet_resolution_order_and_checksum");
}
