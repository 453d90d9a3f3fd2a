//! Reads the initializers (the trained tensors) of an ONNX model.
//!
//! ONNX is protobuf; we declare only the three messages and five fields we need
//! with prost's derive, so no .proto compiler is needed and every other field
//! (the graph's nodes, metadata) is skipped by the decoder.

use anyhow::{bail, Context, Result};
use std::path::Path;
use tch::{Kind, Tensor};

#[derive(Clone, PartialEq, prost::Message)]
struct ModelProto {
    #[prost(message, optional, tag = "7")]
    graph: Option<GraphProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct GraphProto {
    #[prost(message, repeated, tag = "5")]
    initializer: Vec<TensorProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    data_type: i32,
    #[prost(float, repeated, tag = "4")]
    float_data: Vec<f32>,
    #[prost(string, tag = "8")]
    name: String,
    #[prost(bytes = "vec", tag = "9")]
    raw_data: Vec<u8>,
}

/// ONNX's `TensorProto.DataType.FLOAT`.
const ONNX_FLOAT: i32 = 1;

/// All float initializers of an ONNX file, by their ONNX names.
pub fn read_onnx_initializers(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let model: ModelProto = prost::Message::decode(bytes.as_slice())
        .with_context(|| format!("{} is not a valid ONNX file (truncated or damaged)", path.display()))?;
    let Some(graph) = model.graph else { bail!("{} has no graph", path.display()) };
    let mut out = Vec::new();
    for t in graph.initializer.into_iter().filter(|t| t.data_type == ONNX_FLOAT) {
        let expected: i64 = t.dims.iter().product();
        let tensor = if !t.raw_data.is_empty() {
            // raw_data is little-endian float32, as on every machine we run on.
            if t.raw_data.len() as i64 != expected * 4 {
                bail!("{}: initializer {} has {} bytes for shape {:?}", path.display(), t.name, t.raw_data.len(), t.dims);
            }
            Tensor::from_data_size(&t.raw_data, &t.dims, Kind::Float)
        } else {
            if t.float_data.len() as i64 != expected {
                bail!("{}: initializer {} has {} values for shape {:?}", path.display(), t.name, t.float_data.len(), t.dims);
            }
            Tensor::from_slice(&t.float_data).reshape(&t.dims)
        };
        out.push((t.name, tensor));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn reads_raw_and_float_initializers() {
        let model = ModelProto {
            graph: Some(GraphProto {
                initializer: vec![
                    TensorProto {
                        dims: vec![2, 2],
                        data_type: ONNX_FLOAT,
                        name: "raw".into(),
                        raw_data: [1f32, 2., 3., 4.].iter().flat_map(|v| v.to_le_bytes()).collect(),
                        ..Default::default()
                    },
                    TensorProto { dims: vec![3], data_type: ONNX_FLOAT, name: "listed".into(), float_data: vec![5., 6., 7.], ..Default::default() },
                    TensorProto { dims: vec![1], data_type: 7, name: "int64 shape".into(), ..Default::default() },
                ],
            }),
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.onnx");
        std::fs::write(&path, model.encode_to_vec()).unwrap();
        let tensors = read_onnx_initializers(&path).unwrap();
        assert_eq!(tensors.len(), 2);
        assert_eq!(tensors[0].1.size(), [2, 2]);
        assert_eq!(tensors[0].1.double_value(&[1, 0]), 3.0);
        assert_eq!(tensors[1].1.double_value(&[2]), 7.0);

        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
        let err = read_onnx_initializers(&path).unwrap_err().to_string();
        assert!(err.contains("m.onnx") && err.contains("not a valid ONNX"), "{err}");
    }
}
