//! A cell's IOPub messages collected into nbformat outputs, as Jupyter front ends do,
//! and what the runner reads from them (errors, a Rust panic evcxr reported as `ok`).

use super::{ExecStatus, Execution};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::time::Duration;

/// Collects a cell's IOPub messages into nbformat outputs, as Jupyter front ends do:
/// consecutive stream chunks of one stream are merged (carriage returns applied),
/// `clear_output` (with `wait`) and `update_display_data` are honoured.
#[derive(Default)]
pub(super) struct Outputs {
    pub(super) list: Vec<Value>,
    pub(super) clear_pending: bool,
    pub(super) display_ids: HashMap<String, Vec<usize>>,
    pub(super) error_text: Vec<String>,
}

impl Outputs {
    pub(super) fn handle(&mut self, msg_type: &str, content: &Value) {
        match msg_type {
            "stream" => {
                self.before_output();
                let name = content["name"].as_str().unwrap_or("stdout");
                let text = content["text"].as_str().unwrap_or_default();
                if let Some(last) = self.list.last_mut() {
                    if last["output_type"] == "stream" && last["name"] == name {
                        let merged =
                            format!("{}{}", last["text"].as_str().unwrap_or_default(), text);
                        last["text"] = Value::String(merged);
                        return;
                    }
                }
                self.list
                    .push(json!({"output_type": "stream", "name": name, "text": text}));
            }
            "display_data" | "execute_result" => {
                self.before_output();
                let mut out = Map::new();
                out.insert("output_type".into(), msg_type.into());
                out.insert(
                    "data".into(),
                    content.get("data").cloned().unwrap_or_else(|| json!({})),
                );
                out.insert(
                    "metadata".into(),
                    content
                        .get("metadata")
                        .cloned()
                        .unwrap_or_else(|| json!({})),
                );
                if msg_type == "execute_result" {
                    out.insert(
                        "execution_count".into(),
                        content
                            .get("execution_count")
                            .cloned()
                            .unwrap_or(Value::Null),
                    );
                }
                if let Some(id) = content
                    .pointer("/transient/display_id")
                    .and_then(Value::as_str)
                {
                    self.display_ids
                        .entry(id.to_string())
                        .or_default()
                        .push(self.list.len());
                }
                self.list.push(Value::Object(out));
            }
            "update_display_data" => {
                let Some(id) = content
                    .pointer("/transient/display_id")
                    .and_then(Value::as_str)
                else {
                    return;
                };
                for &i in self.display_ids.get(id).into_iter().flatten() {
                    if let Some(out) = self.list.get_mut(i) {
                        out["data"] = content.get("data").cloned().unwrap_or_else(|| json!({}));
                        out["metadata"] = content
                            .get("metadata")
                            .cloned()
                            .unwrap_or_else(|| json!({}));
                    }
                }
            }
            "error" => {
                self.before_output();
                let traceback: Vec<String> = content["traceback"]
                    .as_array()
                    .map(|t| {
                        t.iter()
                            .filter_map(|l| l.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                self.push_error(
                    content["ename"].as_str().unwrap_or_default(),
                    content["evalue"].as_str().unwrap_or_default(),
                    traceback,
                );
            }
            "clear_output" => {
                if content["wait"].as_bool().unwrap_or(false) {
                    self.clear_pending = true;
                } else {
                    self.clear();
                }
            }
            _ => {}
        }
    }

    pub(super) fn before_output(&mut self) {
        if self.clear_pending {
            self.clear();
        }
    }

    pub(super) fn clear(&mut self) {
        self.clear_pending = false;
        self.list.clear();
        self.display_ids.clear();
    }

    pub(super) fn has_error(&self) -> bool {
        self.list.iter().any(|o| o["output_type"] == "error")
    }

    pub(super) fn push_error(&mut self, ename: &str, evalue: &str, traceback: Vec<String>) {
        let mut text = format!("{ename}: {evalue}");
        if !traceback.is_empty() {
            text.push('\n');
            text.push_str(&traceback.join("\n"));
        }
        self.error_text.push(crate::ansi::strip(&text));
        self.list.push(json!({
            "output_type": "error", "ename": ename, "evalue": evalue, "traceback": traceback,
        }));
    }

    pub(super) fn finish(
        mut self,
        execution_count: Option<i64>,
        status: ExecStatus,
        elapsed: Duration,
    ) -> Execution {
        for out in &mut self.list {
            if out["output_type"] == "stream" {
                let text = apply_carriage_returns(out["text"].as_str().unwrap_or_default());
                out["text"] = Value::String(text);
            }
            crate::notebook::split_output_lines(out);
        }
        Execution {
            outputs: self.list,
            execution_count,
            status,
            elapsed,
            error_text: self.error_text.join("\n\n"),
        }
    }
}

/// A Rust panic in a cell's stderr. evcxr catches a cell's panic (to keep the session's
/// variables), prints the panic to stderr and replies `ok`: without this, a panicking cell
/// would pass. Returns the error text: `panic: <message>` and the whole stderr.
pub fn rust_panic(outputs: &[Value]) -> Option<String> {
    let stderr: String = outputs
        .iter()
        .filter(|o| o["output_type"] == "stream" && o["name"] == "stderr")
        .map(|o| crate::notebook::multiline(o.get("text")))
        .collect();
    let stderr = crate::ansi::strip(&stderr);
    let mut lines = stderr.lines();
    lines.find(|l| l.starts_with("thread '") && l.contains(" panicked at "))?;
    let message = lines.next().unwrap_or_default().trim();
    Some(format!("panic: {message}\n{}", stderr.trim_matches('\n')))
}

/// What a terminal shows for text with `\r` (progress bars): on each line only what was
/// written after the last carriage return.
pub(super) fn apply_carriage_returns(text: &str) -> String {
    if !text.contains('\r') {
        return text.to_string();
    }
    let text = text.replace("\r\n", "\n");
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        // A trailing `\r` (the cursor moved back, nothing written yet) keeps the line.
        let trimmed = line.trim_end_matches('\r');
        out.push_str(trimmed.rsplit('\r').next().unwrap_or_default());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carriage_returns_keep_the_last_write() {
        assert_eq!(apply_carriage_returns("a\r\nb\n"), "a\nb\n");
        assert_eq!(
            apply_carriage_returns("10%\r50%\r100%\ndone\n"),
            "100%\ndone\n"
        );
        assert_eq!(apply_carriage_returns("x\r"), "x");
    }

    #[test]
    fn outputs_merge_streams_and_honour_clear() {
        let mut o = Outputs::default();
        o.handle("stream", &json!({"name": "stdout", "text": "a\n"}));
        o.handle("stream", &json!({"name": "stdout", "text": "b\n"}));
        o.handle("stream", &json!({"name": "stderr", "text": "w\n"}));
        o.handle(
            "display_data",
            &json!({"data": {"text/plain": "1"}, "metadata": {}, "transient": {"display_id": "d"}}),
        );
        o.handle(
            "update_display_data",
            &json!({"data": {"text/plain": "2"}, "metadata": {}, "transient": {"display_id": "d"}}),
        );
        let e = o.finish(Some(3), ExecStatus::Ok, Duration::ZERO);
        assert_eq!(e.outputs.len(), 3);
        assert_eq!(e.outputs[0]["text"], json!(["a\n", "b\n"]));
        assert_eq!(e.outputs[2]["data"]["text/plain"], json!(["2"]));
        assert!(e.outputs[2].get("transient").is_none());

        let mut o = Outputs::default();
        o.handle("stream", &json!({"name": "stdout", "text": "old"}));
        o.handle("clear_output", &json!({"wait": true}));
        assert_eq!(o.list.len(), 1);
        o.handle("stream", &json!({"name": "stdout", "text": "new"}));
        assert_eq!(o.list.len(), 1);
        assert_eq!(o.list[0]["text"], "new");
    }

    #[test]
    fn rust_panics_on_stderr_are_found() {
        let outputs = vec![
            json!({"output_type": "stream", "name": "stdout", "text": ["before\n"]}),
            json!({"output_type": "stream", "name": "stderr", "text": [
                "\n", "thread '<unnamed>' (15847) panicked at src/lib.rs:97:1:\n", "boom\n",
                "note: run with `RUST_BACKTRACE=1`\n"]}),
        ];
        let text = rust_panic(&outputs).unwrap();
        assert!(
            text.starts_with(
                "panic: boom\nthread '<unnamed>' (15847) panicked at src/lib.rs:97:1:\nboom\n"
            ),
            "{text}"
        );
        let warning = vec![
            json!({"output_type": "stream", "name": "stderr", "text": "warning: unused variable\n"}),
        ];
        assert_eq!(rust_panic(&warning), None);
    }

    #[test]
    fn error_text_is_full_and_plain() {
        let mut o = Outputs::default();
        o.handle(
            "error",
            &json!({"ename": "Error", "evalue": "mismatched types",
                    "traceback": ["\u{1b}[31merror[E0308]\u{1b}[0m: mismatched types", "  --> src/lib.rs:1:1"]}),
        );
        let e = o.finish(None, ExecStatus::Error, Duration::ZERO);
        assert_eq!(
            e.error_text,
            "Error: mismatched types\nerror[E0308]: mismatched types\n  --> src/lib.rs:1:1"
        );
    }
}
