//! nbformat 4 notebooks as JSON values: read and validated (with line and column on a JSON
//! error), cells looked at, and written back atomically in nbformat's own layout
//! (sorted keys, one-space indent, trailing newline). Every field the runner does not
//! change — unknown ones included — is written back as it was read.

use serde::Serialize;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// A notebook read from disk.
#[derive(Clone, Debug)]
pub struct Notebook {
    pub path: PathBuf,
    pub value: Value,
    /// The file's bytes as read.
    pub original: Vec<u8>,
}

/// Why a notebook cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum NotebookError {
    #[error("{}: cannot read: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}:{line}:{column}: malformed notebook JSON: {message}", path.display())]
    Json {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}: not a valid nbformat 4 notebook: {message}", path.display())]
    Format { path: PathBuf, message: String },
}

impl Notebook {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Notebook, NotebookError> {
        let original = std::fs::read(path).map_err(|error| NotebookError::Io {
            path: path.into(),
            error,
        })?;
        let value = parse(path, &original)?;
        Ok(Notebook {
            path: path.to_path_buf(),
            value,
            original,
        })
    }

    /// `metadata.kernelspec.name`.
    pub fn kernel_name(&self) -> Option<&str> {
        self.value.pointer("/metadata/kernelspec/name")?.as_str()
    }

    pub fn cells(&self) -> &[Value] {
        self.value["cells"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    pub fn cells_mut(&mut self) -> &mut Vec<Value> {
        self.value["cells"]
            .as_array_mut()
            .expect("validated: cells is an array")
    }

    /// The notebook as nbformat writes it.
    pub fn to_json(&self) -> String {
        to_json(&self.value)
    }
}

/// Parses and validates notebook bytes.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Value, NotebookError> {
    let format = |message: String| NotebookError::Format {
        path: path.into(),
        message,
    };
    let text = std::str::from_utf8(bytes).map_err(|e| format(format!("not UTF-8 text ({e})")))?;
    let value: Value = serde_json::from_str(text).map_err(|e| NotebookError::Json {
        path: path.into(),
        line: e.line(),
        column: e.column(),
        message: e
            .to_string()
            .split(" at line ")
            .next()
            .unwrap_or_default()
            .to_string(),
    })?;
    let Some(top) = value.as_object() else {
        return Err(format("the top level is not a JSON object".into()));
    };
    match top.get("nbformat").and_then(Value::as_i64) {
        Some(4) => {}
        Some(n) => {
            return Err(format(format!(
                "nbformat {n} is not supported (convert it: jupyter nbconvert --to notebook --nbformat 4)"
            )))
        }
        None => return Err(format("no integer `nbformat` field".into())),
    }
    let Some(cells) = top.get("cells").and_then(Value::as_array) else {
        return Err(format("no `cells` array".into()));
    };
    for (i, cell) in cells.iter().enumerate() {
        let kind = cell.get("cell_type").and_then(Value::as_str);
        match kind {
            Some("code") => {
                if !cell.get("outputs").is_some_and(Value::is_array) {
                    return Err(format(format!(
                        "cell {} (code) has no `outputs` array",
                        i + 1
                    )));
                }
            }
            Some(_) => {}
            None => return Err(format(format!("cell {} has no `cell_type`", i + 1))),
        }
        match cell.get("source") {
            Some(Value::String(_)) => {}
            Some(Value::Array(lines)) if lines.iter().all(Value::is_string) => {}
            _ => return Err(format(format!("cell {} has no text `source`", i + 1))),
        }
    }
    // The full schema, as nteract's nbformat crate reads it.
    nbformat::parse_notebook(text).map_err(|e| format(e.to_string()))?;
    Ok(value)
}

/// A cell's source as one string.
pub fn source(cell: &Value) -> String {
    multiline(cell.get("source"))
}

/// A multiline string field (a string or a list of strings) as one string.
pub fn multiline(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(lines)) => lines.iter().filter_map(Value::as_str).collect(),
        _ => String::new(),
    }
}

pub fn is_code(cell: &Value) -> bool {
    cell.get("cell_type").and_then(Value::as_str) == Some("code")
}

/// `metadata.tags`.
pub fn tags(cell: &Value) -> Vec<&str> {
    cell.pointer("/metadata/tags")
        .and_then(Value::as_array)
        .map(|t| t.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Splits text fields of a fresh output into lists of lines, as nbformat does on write
/// (stream text; `text/*`, `application/javascript` and `image/svg+xml` data).
pub fn split_output_lines(output: &mut Value) {
    let Some(obj) = output.as_object_mut() else {
        return;
    };
    match obj.get("output_type").and_then(Value::as_str) {
        Some("stream") => {
            if let Some(Value::String(text)) = obj.get("text") {
                let lines = split_lines(text);
                obj.insert("text".into(), lines);
            }
        }
        Some("execute_result") | Some("display_data") => {
            if let Some(Value::Object(data)) = obj.get_mut("data") {
                for (mime, value) in data.iter_mut() {
                    let split = mime.starts_with("text/")
                        || mime == "application/javascript"
                        || mime == "image/svg+xml";
                    if let (true, Value::String(text)) = (split, &*value) {
                        *value = split_lines(text);
                    }
                }
            }
        }
        _ => {}
    }
}

/// Python's `str.splitlines(True)` for `\n`, `\r\n` and `\r`.
fn split_lines(text: &str) -> Value {
    let mut lines = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => {
                lines.push(Value::String(text[start..=i].to_string()));
                start = i + 1;
            }
            b'\r' => {
                let end = if bytes.get(i + 1) == Some(&b'\n') {
                    i + 1
                } else {
                    i
                };
                lines.push(Value::String(text[start..=end].to_string()));
                i = end;
                start = end + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if start < text.len() {
        lines.push(Value::String(text[start..].to_string()));
    }
    Value::Array(lines)
}

/// JSON as Python's nbformat writes it: keys sorted, one-space indent, UTF-8 kept, and a
/// trailing newline.
pub fn to_json(value: &Value) -> String {
    let sorted = sort_keys(value);
    let mut buf = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b" ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, formatter);
    sorted.serialize(&mut ser).expect("a JSON value serializes");
    buf.push(b'\n');
    String::from_utf8(buf).expect("serde_json writes UTF-8")
}

fn sort_keys(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            let mut sorted = Map::new();
            for (k, v) in entries {
                sorted.insert(k.clone(), sort_keys(v));
            }
            Value::Object(sorted)
        }
        Value::Array(items) => Value::Array(items.iter().map(sort_keys).collect()),
        other => other.clone(),
    }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, flushed to
/// disk, then renamed over `path`; an existing file's permissions are kept. The one
/// implementation shared with the library ([`aula_paths::write_atomic_with`]).
pub use aula_paths::write_atomic;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn malformed_json_names_line_and_column() {
        let err = parse(Path::new("x.ipynb"), b"{\n \"cells\": [\n  {,\n ]\n}").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("x.ipynb:3:4: malformed notebook JSON"),
            "{msg}"
        );
    }

    #[test]
    fn rejects_other_formats() {
        let err = parse(
            Path::new("a.ipynb"),
            br#"{"nbformat": 3, "worksheets": []}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("nbformat 3 is not supported"),
            "{err}"
        );
        let err = parse(Path::new("a.ipynb"), br#"[1, 2]"#).unwrap_err();
        assert!(err.to_string().contains("not a JSON object"), "{err}");
    }

    #[test]
    fn writes_like_nbformat_and_keeps_unknown_fields() {
        let text = r#"{"cells": [{"cell_type": "code", "execution_count": null, "id": "a1",
            "metadata": {"zz": 1, "tags": ["no-ejecutar"]}, "outputs": [], "source": "x = 1",
            "custom_field": {"b": 2, "a": "ñ"}}],
            "metadata": {"kernelspec": {"name": "rust-aula", "display_name": "Rust · aula", "language": "rust"}},
            "nbformat": 4, "nbformat_minor": 5, "extra": true}"#;
        let value = parse(Path::new("n.ipynb"), text.as_bytes()).unwrap();
        let out = to_json(&value);
        assert!(out.ends_with("}\n"));
        assert!(
            out.contains("\"custom_field\": {\n    \"a\": \"ñ\",\n    \"b\": 2\n   }"),
            "{out}"
        );
        assert!(out.contains("\"extra\": true"));
        assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), value);
        assert_eq!(tags(&value["cells"][0]), ["no-ejecutar"]);
    }

    #[test]
    fn splits_fresh_outputs_as_nbformat() {
        let mut out = json!({"output_type": "stream", "name": "stdout", "text": "a\nb\r\nc"});
        split_output_lines(&mut out);
        assert_eq!(out["text"], json!(["a\n", "b\r\n", "c"]));
        let mut out = json!({"output_type": "display_data", "metadata": {},
            "data": {"text/plain": "1\n2\n", "image/png": "iVBOR\n", "application/json": "x\ny"}});
        split_output_lines(&mut out);
        assert_eq!(out["data"]["text/plain"], json!(["1\n", "2\n"]));
        assert_eq!(out["data"]["image/png"], json!("iVBOR\n"));
        assert_eq!(out["data"]["application/json"], json!("x\ny"));
    }

    #[test]
    fn atomic_write_replaces_and_keeps_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.ipynb");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
