use aula::prelude::*;

// evcxr shows a cell's last value by first compiling `(value).evcxr_display();` and, when the
// type has no such method, compiling the whole cell a second time with a `{:?}` fallback. This
// trait gives every Debug type that method (printing what evcxr's fallback prints), so each
// cell is compiled once; aula's types keep their own inherent evcxr_display (HTML, PNG), which
// method resolution prefers. (`:fmt` no longer applies to Debug values.)
trait AulaEvcxrDebugDisplay {
    fn evcxr_display(&self);
}
impl<T: std::fmt::Debug + ?Sized> AulaEvcxrDebugDisplay for T {
    fn evcxr_display(&self) {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "EVCXR_BEGIN_CONTENT text/plain\n{:?}\nEVCXR_END_CONTENT\n", self);
        let _ = out.flush();
    }
}

// evcxr infers the type of every `let` with rust-analyzer, in-process; the first time a cell
// names aula's types that costs ≈ 10 s (rust-analyzer reads aula's whole dependency graph).
// Paying it here, at start-up, makes the first lesson cell fast. Nothing runs (`if false`),
// and the variable is dropped, so it does not stay in `:vars`.
let aula_warmup = {
    if false {
        let m = VGG16("none", false, (150, 150, 3))?;
        let _ = m.summary();
        let _ = m.forward_t(&Tensor::zeros(&[1, 3, 150, 150], (Kind::Float, Device::Cpu)), false).size();
    }
    String::new()
};
drop(aula_warmup);
