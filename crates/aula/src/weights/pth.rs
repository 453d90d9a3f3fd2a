//! PyTorch `.pth`/`.pt` state dicts, read without running any pickle code.
//!
//! `torch.save(model.state_dict(), f)` writes a pickle: a program for Python's
//! pickle machine, which may import and call any Python function. That is why
//! `torch.load` on a downloaded file can run code. A state dict needs only a small
//! part of that machine: build dicts, tuples, ints and strings, and call a handful
//! of torch functions that wrap raw storage bytes into tensors. So aula runs its own
//! interpreter that knows only those opcodes and recognises (never imports) those
//! few globals by name; anything else stops the read with an error that names it
//! and its byte offset.
//!
//! Two layouts exist:
//! - zip (torch ≥ 1.6, the default): `<dir>/data.pkl`, plus one entry
//!   `<dir>/data/<key>` with the raw bytes of each storage.
//! - legacy (torch < 1.6, or `_use_new_zipfile_serialization=False`): one stream
//!   with the magic-number pickle, the protocol-version pickle, the sys_info
//!   pickle, the state-dict pickle, the pickled list of storage keys, then each
//!   storage's raw bytes after an 8-byte little-endian element count.
//!
//! In both, the state-dict pickle refers to a storage through a persistent id
//! `('storage', <storage class>, key, location, numel[, view_metadata])`, and a
//! tensor is `_rebuild_tensor_v2(storage, offset, size, stride, ...)`.
//!
//! Names and layouts come back as PyTorch stored them (`_conv_stem.weight`, OIHW);
//! mapping them onto a model is the caller's business. Tensors are views of their
//! storage (as `torch.load` returns them), always on the CPU.

use anyhow::{anyhow, bail, Context, Result};
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use tch::{Kind, Tensor};

use super::NamedTensors;

/// The first pickle of a legacy file: torch's magic number.
const LEGACY_MAGIC: i128 = 0x1950a86a20f9469cfc6c;
/// The second pickle of a legacy file: the format version torch has written since 0.1.
const LEGACY_PROTOCOL: i128 = 1001;

/// Reads a torch state dict (zip or legacy format) into tensors by their PyTorch names.
///
/// Nested dicts (a checkpoint's `{"model": {...}, "epoch": 3}`) become dotted names
/// (`model.fc.weight`); values that are not tensors (`epoch`) are skipped.
pub fn read_pth(path: &Path) -> Result<NamedTensors> {
    // Storage bytes are little-endian and are handed to libtorch as they are.
    if cfg!(target_endian = "big") {
        bail!("reading {} needs a little-endian machine", path.display());
    }
    let what = path.display().to_string();
    let mut head = [0u8; 4];
    let mut file = std::fs::File::open(path).with_context(|| format!("cannot open weights file {what}"))?;
    let n = file.read(&mut head).with_context(|| format!("cannot read {what}"))?;
    if n == 4 && &head == b"PK\x03\x04" {
        read_zip(&what, file)
    } else {
        let data = std::fs::read(path).with_context(|| format!("cannot read {what}"))?;
        read_legacy(&what, &data)
    }
}

fn read_legacy(what: &str, data: &[u8]) -> Result<NamedTensors> {
    if data.first() != Some(&0x80) {
        bail!("{what} is not a PyTorch file: neither a zip archive nor a pickle");
    }
    let (magic, pos) = Unpickler::run(what, data, 0)?;
    if !matches!(magic, Value::Int(LEGACY_MAGIC)) {
        bail!("{what} is not a file written by torch.save (its first pickle is not torch's magic number)");
    }
    let (version, pos) = Unpickler::run(what, data, pos)?;
    if !matches!(version, Value::Int(LEGACY_PROTOCOL)) {
        bail!("{what}: unsupported legacy torch format version {version:?} (expected {LEGACY_PROTOCOL})");
    }
    let (sys_info, pos) = Unpickler::run(what, data, pos)?;
    if dict_get(&sys_info, "little_endian").is_some_and(|v| matches!(v, Value::Bool(false))) {
        bail!("{what} was written on a big-endian machine; aula reads only little-endian storages");
    }
    let (state, pos) = Unpickler::run(what, data, pos)?;
    let (keys, mut pos) = Unpickler::run(what, data, pos)?;
    let Value::List(keys) = keys else { bail!("{what}: the list of storage keys after the state dict is missing") };

    let refs = tensor_refs(what, state)?;
    let kinds = storage_kinds(what, &refs)?;
    // The storages follow in the order of the key list, each as an element count and its bytes.
    let mut storages = HashMap::new();
    for key in keys {
        let key = storage_key(&key).ok_or_else(|| anyhow!("{what}: a storage key is not a string"))?;
        let kind = *kinds.get(&key).ok_or_else(|| anyhow!("{what}: storage {key} is not used by any tensor"))?;
        let count = u64::from_le_bytes(slice(what, data, pos, 8)?.try_into().unwrap());
        let bytes = (count as usize)
            .checked_mul(kind.elt_size_in_bytes())
            .ok_or_else(|| anyhow!("{what}: storage {key} claims {count} elements"))?;
        storages.insert(key.clone(), storage_tensor(what, &key, slice(what, data, pos + 8, bytes)?, kind)?);
        pos += 8 + bytes;
    }
    materialize(what, refs, &storages)
}

fn read_zip(what: &str, file: std::fs::File) -> Result<NamedTensors> {
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .with_context(|| format!("{what} is a damaged or truncated zip archive"))?;
    // torch names the archive's one folder after the file (or `archive/`): find it from data.pkl.
    let pkl_name = zip
        .file_names()
        .find(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("{what} is a zip archive without <folder>/data.pkl: not a torch.save file"))?;
    let prefix = &pkl_name[..pkl_name.len() - "data.pkl".len()];
    let byteorder = format!("{prefix}byteorder");
    if zip.file_names().any(|n| n == byteorder) {
        let order = zip_entry(what, &mut zip, &byteorder)?;
        if order != b"little" {
            bail!("{what} holds {} storages; aula reads only little-endian ones", String::from_utf8_lossy(&order));
        }
    }
    let pkl = zip_entry(what, &mut zip, &pkl_name)?;
    let (state, _) = Unpickler::run(&format!("{what} ({pkl_name})"), &pkl, 0)?;
    let refs = tensor_refs(what, state)?;
    let mut storages = HashMap::new();
    for (key, kind) in storage_kinds(what, &refs)? {
        let bytes = zip_entry(what, &mut zip, &format!("{prefix}data/{key}"))?;
        storages.insert(key.clone(), storage_tensor(what, &key, &bytes, kind)?);
    }
    materialize(what, refs, &storages)
}

fn zip_entry<R: std::io::Read + std::io::Seek>(what: &str, zip: &mut zip::ZipArchive<R>, name: &str) -> Result<Vec<u8>> {
    let mut entry = zip.by_name(name).with_context(|| format!("{what}: the zip archive has no entry {name}"))?;
    let mut bytes = Vec::new(); // not sized from the header: a crafted one could claim terabytes
    entry.read_to_end(&mut bytes).with_context(|| format!("{what}: entry {name} is damaged or truncated"))?;
    Ok(bytes)
}

/// `data[pos..pos + n]`, or an error saying the file is truncated.
fn slice<'a>(what: &str, data: &'a [u8], pos: usize, n: usize) -> Result<&'a [u8]> {
    pos.checked_add(n)
        .and_then(|end| data.get(pos..end))
        .ok_or_else(|| anyhow!("{what} is truncated: {n} bytes needed at byte {pos}, the file has {}", data.len()))
}

// ---------------------------------------------------------------------------
// From the pickle's value to tensors
// ---------------------------------------------------------------------------

/// A storage as a persistent id names it (its bytes are read later).
#[derive(Clone, Debug, PartialEq)]
struct StorageRef {
    key: String,
    kind: Kind,
    /// Where a legacy storage *view* starts in its root storage, in elements.
    offset: i64,
}

/// `_rebuild_tensor_v2(storage, offset, size, stride, ...)`, not yet built.
#[derive(Clone, Debug, PartialEq)]
struct TensorRef {
    storage: StorageRef,
    offset: i64,
    size: Vec<i64>,
    stride: Vec<i64>,
}

/// The tensors of the unpickled value, with dotted names for nested dicts.
fn tensor_refs(what: &str, state: Value) -> Result<Vec<(String, TensorRef)>> {
    fn walk(what: &str, prefix: &str, v: Value, out: &mut Vec<(String, TensorRef)>) -> Result<()> {
        match v {
            Value::Tensor(t) => out.push((prefix.to_owned(), t)),
            Value::Dict(items) => {
                for (k, v) in items {
                    let k = match k {
                        Value::Str(s) => s,
                        Value::Int(i) => i.to_string(), // an optimizer's per-parameter state
                        other => bail!("{what}: a dict key is a {}, not a name", other.kind_name()),
                    };
                    let name = if prefix.is_empty() { k } else { format!("{prefix}.{k}") };
                    walk(what, &name, v, out)?;
                }
            }
            _ => {} // epoch numbers, config strings: not weights
        }
        Ok(())
    }
    if !matches!(state, Value::Dict(_)) {
        bail!("{what} holds a {}, not a state dict (a dict of tensors)", state.kind_name());
    }
    let mut out = Vec::new();
    walk(what, "", state, &mut out)?;
    if out.is_empty() {
        bail!("{what} holds a dict without tensors");
    }
    Ok(out)
}

/// The dtype of each storage the tensors use (one storage, one dtype).
fn storage_kinds(what: &str, refs: &[(String, TensorRef)]) -> Result<HashMap<String, Kind>> {
    let mut kinds = HashMap::new();
    for (name, t) in refs {
        let kind = *kinds.entry(t.storage.key.clone()).or_insert(t.storage.kind);
        if kind != t.storage.kind {
            bail!("{what}: tensor {name} reads storage {} as {:?}, another tensor as {kind:?}", t.storage.key, t.storage.kind);
        }
    }
    Ok(kinds)
}

/// A storage's raw little-endian bytes as a 1-D tensor.
fn storage_tensor(what: &str, key: &str, bytes: &[u8], kind: Kind) -> Result<Tensor> {
    let elt = kind.elt_size_in_bytes();
    if bytes.len() % elt != 0 {
        bail!("{what}: storage {key} has {} bytes, not a whole number of {kind:?} elements", bytes.len());
    }
    // from_data_size copies exactly numel × elt bytes, which we just checked are there.
    Ok(Tensor::f_from_data_size(bytes, &[(bytes.len() / elt) as i64], kind)?)
}

/// Each tensor as a view (size, stride, offset) of its storage, checked to stay inside it.
fn materialize(what: &str, refs: Vec<(String, TensorRef)>, storages: &HashMap<String, Tensor>) -> Result<NamedTensors> {
    let mut out = NamedTensors::new();
    for (name, t) in refs {
        let storage = storages
            .get(&t.storage.key)
            .ok_or_else(|| anyhow!("{what}: the bytes of storage {} (tensor {name}) are missing", t.storage.key))?;
        let numel = storage.size()[0] as i128;
        let offset = t.storage.offset + t.offset;
        // The last element the view touches must lie inside the storage (libtorch
        // would refuse too, but with a message that does not name the tensor).
        let mut last = offset as i128;
        let valid = t.size.len() == t.stride.len()
            && offset >= 0
            && t.size.iter().zip(&t.stride).all(|(&n, &s)| {
                last += (n as i128 - 1).max(0) * s as i128;
                n >= 0 && s >= 0
            });
        let empty = t.size.contains(&0);
        if !valid || (!empty && last >= numel) {
            bail!(
                "{what}: tensor {name} (size {:?}, stride {:?}, offset {offset}) does not fit its storage of {numel} elements",
                t.size,
                t.stride
            );
        }
        let tensor = storage.f_as_strided(t.size.as_slice(), t.stride.as_slice(), offset)?;
        out.insert(name, tensor);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// The restricted pickle interpreter
// ---------------------------------------------------------------------------

/// The only functions and classes a state dict's pickle may name. They are
/// recognised by name and interpreted here; nothing is imported or called.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Global {
    /// `collections.OrderedDict`: a state dict, and a tensor's empty backward hooks.
    OrderedDict,
    /// `torch._utils._rebuild_tensor_v2` (and v1): (storage, offset, size, stride, ...).
    RebuildTensor,
    /// `torch._utils._rebuild_parameter`: (tensor, requires_grad, hooks[, state]) → the tensor.
    RebuildParameter,
    /// A storage class (`torch.FloatStorage`, ...): the dtype of a persistent id.
    Storage(Kind),
}

fn allowed_global(module: &str, name: &str) -> Option<Global> {
    match (module, name) {
        ("collections", "OrderedDict") => Some(Global::OrderedDict),
        ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor") => Some(Global::RebuildTensor),
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => Some(Global::RebuildParameter),
        // Old files saved from a GPU name `torch.cuda.FloatStorage`; aula loads on the CPU.
        ("torch" | "torch.cuda", _) | ("torch.storage", "UntypedStorage") => storage_kind(name).map(Global::Storage),
        _ => None,
    }
}

fn storage_kind(class: &str) -> Option<Kind> {
    Some(match class {
        "FloatStorage" => Kind::Float,
        "DoubleStorage" => Kind::Double,
        "HalfStorage" => Kind::Half,
        "BFloat16Storage" => Kind::BFloat16,
        "LongStorage" => Kind::Int64,
        "IntStorage" => Kind::Int,
        "ShortStorage" => Kind::Int16,
        "CharStorage" => Kind::Int8,
        "ByteStorage" => Kind::Uint8,
        "BoolStorage" => Kind::Bool,
        "ComplexFloatStorage" => Kind::ComplexFloat,
        "ComplexDoubleStorage" => Kind::ComplexDouble,
        // An untyped storage is bytes; torch.load also gives uint8 tensors on it.
        "UntypedStorage" => Kind::Uint8,
        _ => return None,
    })
}

/// What the interpreter can build: plain data, the allowed globals, and the
/// storages and tensors they describe.
#[derive(Clone, Debug, PartialEq)]
enum Value {
    None,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    /// Ordered (an `OrderedDict`); a repeated key keeps its last value later.
    Dict(Vec<(Value, Value)>),
    Global(Global),
    Storage(StorageRef),
    Tensor(TensorRef),
}

impl Value {
    fn kind_name(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "string",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global(_) => "class or function",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
        }
    }

    /// Nesting depth (recursion bounded by MAX_DEPTH, checked on every insertion).
    fn depth(&self) -> usize {
        match self {
            Value::Tuple(v) | Value::List(v) => 1 + v.iter().map(Value::depth).max().unwrap_or(0),
            Value::Dict(v) => 1 + v.iter().map(|(k, v)| k.depth().max(v.depth())).max().unwrap_or(0),
            _ => 0,
        }
    }

    /// How many values this one is made of.
    fn count(&self) -> usize {
        match self {
            Value::Tuple(v) | Value::List(v) => 1 + v.iter().map(Value::count).sum::<usize>(),
            Value::Dict(v) => 1 + v.iter().map(|(k, v)| k.count() + v.count()).sum::<usize>(),
            _ => 1,
        }
    }

    fn int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => i64::try_from(*i).ok(),
            _ => None,
        }
    }

    fn ints(&self) -> Option<Vec<i64>> {
        match self {
            Value::Tuple(v) | Value::List(v) => v.iter().map(Value::int).collect(),
            _ => None,
        }
    }
}

fn dict_get<'a>(dict: &'a Value, key: &str) -> Option<&'a Value> {
    let Value::Dict(items) = dict else { return None };
    items.iter().rev().find(|(k, _)| matches!(k, Value::Str(s) if s == key)).map(|(_, v)| v)
}

/// Storage keys are strings; very old files may use ints.
fn storage_key(v: &Value) -> Option<String> {
    match v {
        Value::Str(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// Containers nested deeper than this are refused: a state dict nests 3 deep, and
/// deeper values would overflow the stack when walked or dropped (both recursive).
const MAX_DEPTH: usize = 64;
/// How many values BINGET may copy out of the memo in one pickle. Copies (not
/// shared references as in Python) keep the interpreter simple; the budget stops
/// a small crafted file from doubling a list again and again until memory runs out.
/// A real state dict copies a few strings and globals per tensor.
const MAX_COPIED: usize = 1 << 22;

/// Runs one pickle over `data`. Byte offsets in errors are offsets into `data`
/// (the whole file for legacy files, `data.pkl` for zip files).
struct Unpickler<'a> {
    what: &'a str,
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    /// Stack heights at each MARK.
    marks: Vec<usize>,
    /// BINPUT/MEMOIZE copies (not shares) values: in a state dict only
    /// unchanging things (globals, storages, tensors, strings) are fetched back.
    memo: HashMap<u32, Value>,
    /// Values copied out of the memo so far (see MAX_COPIED).
    copied: usize,
}

impl<'a> Unpickler<'a> {
    /// Runs the pickle that starts at `pos`; returns its value and where it ended.
    fn run(what: &'a str, data: &'a [u8], pos: usize) -> Result<(Value, usize)> {
        let mut u = Unpickler { what, data, pos, stack: Vec::new(), marks: Vec::new(), memo: HashMap::new(), copied: 0 };
        let value = u.run_to_stop()?;
        Ok((value, u.pos))
    }

    fn run_to_stop(&mut self) -> Result<Value> {
        loop {
            let at = self.pos;
            let op = self.take(1)?[0];
            let value = match op {
                0x80 => {
                    self.take(1)?; // PROTO: any protocol, we check each opcode instead
                    continue;
                }
                0x95 => {
                    self.take(8)?; // FRAME: a read-ahead hint, nothing to do
                    continue;
                }
                b'.' => return self.pop(at), // STOP
                b'(' => {
                    self.marks.push(self.stack.len()); // MARK
                    continue;
                }
                b'}' => Value::Dict(Vec::new()),
                b']' => Value::List(Vec::new()),
                b')' => Value::Tuple(Vec::new()),
                b'N' => Value::None,
                0x88 => Value::Bool(true),
                0x89 => Value::Bool(false),
                b'K' => Value::Int(self.take(1)?[0] as i128), // BININT1
                b'M' => Value::Int(u16::from_le_bytes(self.array()?) as i128), // BININT2
                b'J' => Value::Int(i32::from_le_bytes(self.array()?) as i128), // BININT
                0x8a => {
                    // LONG1: n bytes, little-endian two's complement (torch's magic number is 10)
                    let n = self.take(1)?[0] as usize;
                    if n > 16 {
                        return Err(self.bad(at, &format!("an integer of {n} bytes")));
                    }
                    let bytes = self.take(n)?;
                    let fill = if bytes.last().is_some_and(|b| b & 0x80 != 0) { 0xff } else { 0 };
                    let mut full = [fill; 16];
                    full[..n].copy_from_slice(bytes);
                    Value::Int(i128::from_le_bytes(full))
                }
                b'G' => Value::Float(f64::from_be_bytes(self.array()?)), // BINFLOAT
                b'X' | 0x8c | 0x8d => {
                    // BINUNICODE, SHORT_BINUNICODE, BINUNICODE8
                    let n = match op {
                        b'X' => u32::from_le_bytes(self.array()?) as u64,
                        0x8c => self.take(1)?[0] as u64,
                        _ => u64::from_le_bytes(self.array()?),
                    };
                    self.string(n, at)?
                }
                // Python 2's str (old legacy files): bytes, read as Latin-1.
                b'U' | b'T' => {
                    let n = if op == b'U' { self.take(1)?[0] as usize } else { u32::from_le_bytes(self.array()?) as usize };
                    Value::Str(self.take(n)?.iter().map(|&b| b as char).collect())
                }
                b't' => {
                    // TUPLE
                    let items = self.pop_mark(at)?;
                    Value::Tuple(self.nest(items, at)?)
                }
                0x85..=0x87 => {
                    // TUPLE1..3
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < self.marks.last().copied().unwrap_or(0) + n {
                        return Err(self.bad(at, "a tuple of more items than the stack holds"));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    Value::Tuple(self.nest(items, at)?)
                }
                b'a' | b'e' => {
                    // APPEND, APPENDS
                    let items = if op == b'a' { vec![self.pop(at)?] } else { self.pop_mark(at)? };
                    let items = self.nest(items, at)?;
                    match self.stack.last_mut() {
                        Some(Value::List(list)) => list.extend(items),
                        _ => return Err(self.bad(at, "APPEND to something that is not a list")),
                    }
                    continue;
                }
                b's' | b'u' => {
                    // SETITEM, SETITEMS
                    let items = if op == b's' {
                        let v = self.pop(at)?;
                        vec![self.pop(at)?, v]
                    } else {
                        self.pop_mark(at)?
                    };
                    let mut items = self.nest(items, at)?;
                    if items.len() % 2 != 0 {
                        return Err(self.bad(at, "SETITEMS with an odd number of items"));
                    }
                    let mut pairs = Vec::with_capacity(items.len() / 2);
                    while !items.is_empty() {
                        let mut kv = items.drain(..2);
                        pairs.push((kv.next().unwrap(), kv.next().unwrap()));
                    }
                    match self.stack.last_mut() {
                        Some(Value::Dict(dict)) => dict.extend(pairs),
                        _ => return Err(self.bad(at, "SETITEM on something that is not a dict")),
                    }
                    continue;
                }
                b'q' | b'r' | 0x94 => {
                    // BINPUT, LONG_BINPUT, MEMOIZE
                    let index = match op {
                        b'q' => self.take(1)?[0] as u32,
                        b'r' => u32::from_le_bytes(self.array()?),
                        _ => self.memo.len() as u32,
                    };
                    let top = self.stack.last().ok_or_else(|| self.bad(at, "memo of an empty stack"))?.clone();
                    self.memo.insert(index, top);
                    continue;
                }
                b'h' | b'j' => {
                    // BINGET, LONG_BINGET
                    let index = if op == b'h' { self.take(1)?[0] as u32 } else { u32::from_le_bytes(self.array()?) };
                    let value = self.memo.get(&index).ok_or_else(|| self.bad(at, &format!("memo entry {index}, never stored")))?;
                    self.copied += value.count();
                    if self.copied > MAX_COPIED {
                        return Err(self.bad(at, "more than 4 million values copied from the memo"));
                    }
                    value.clone()
                }
                b'c' => {
                    // GLOBAL "module\nname\n"
                    let module = self.line()?;
                    let name = self.line()?;
                    self.global(&module, &name, at)?
                }
                0x93 => {
                    // STACK_GLOBAL: module and name are the two strings on the stack
                    let name = self.pop(at)?;
                    let module = self.pop(at)?;
                    let (Value::Str(module), Value::Str(name)) = (module, name) else {
                        return Err(self.bad(at, "STACK_GLOBAL without two strings"));
                    };
                    self.global(&module, &name, at)?
                }
                b'R' => {
                    // REDUCE: call an allowed global, interpreted here
                    let args = self.pop(at)?;
                    let callee = self.pop(at)?;
                    self.call(callee, args, at)?
                }
                b'b' => {
                    // BUILD: the state of the object below it, i.e. the state dict's
                    // `_metadata` (module versions) or a parameter's state; not needed.
                    self.pop(at)?;
                    if self.stack.is_empty() {
                        return Err(self.bad(at, "BUILD without an object"));
                    }
                    continue;
                }
                b'Q' => {
                    // BINPERSID: the pickle's reference to a storage outside it
                    let pid = self.pop(at)?;
                    self.persistent(pid, at)?
                }
                _ => return Err(self.refuse(at, &format!("pickle opcode {} (0x{op:02x})", opcode_name(op)), "is not used by tensor state dicts")),
            };
            self.stack.push(value);
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let bytes = slice(self.what, self.data, self.pos, n)?;
        self.pos += n;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N)?.try_into().unwrap())
    }

    fn string(&mut self, n: u64, at: usize) -> Result<Value> {
        let bytes = self.take(usize::try_from(n).unwrap_or(usize::MAX))?;
        let s = std::str::from_utf8(bytes).map_err(|_| self.bad(at, "a string that is not UTF-8"))?;
        Ok(Value::Str(s.to_owned()))
    }

    /// A newline-terminated line (GLOBAL's operands).
    fn line(&mut self) -> Result<String> {
        let rest = &self.data[self.pos..];
        let Some(n) = rest.iter().position(|&b| b == b'\n') else {
            bail!("{} is truncated: a GLOBAL at byte {} has no end of line", self.what, self.pos);
        };
        let line = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(line)
    }

    fn pop(&mut self, at: usize) -> Result<Value> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return Err(self.bad(at, "a pop across a MARK"));
        }
        self.stack.pop().ok_or_else(|| self.bad(at, "a pop from an empty stack"))
    }

    /// Everything pushed since the last MARK.
    fn pop_mark(&mut self, at: usize) -> Result<Vec<Value>> {
        match self.marks.pop() {
            Some(m) if m <= self.stack.len() => Ok(self.stack.split_off(m)),
            _ => return Err(self.bad(at, "an opcode that needs a MARK without one")),
        }
    }

    /// Items about to go into a container, checked not to nest too deep.
    fn nest(&self, items: Vec<Value>, at: usize) -> Result<Vec<Value>> {
        if items.iter().any(|v| v.depth() >= MAX_DEPTH) {
            return Err(self.bad(at, &format!("containers nested more than {MAX_DEPTH} deep")));
        }
        Ok(items)
    }

    fn global(&self, module: &str, name: &str, at: usize) -> Result<Value> {
        match allowed_global(module, name) {
            Some(g) => Ok(Value::Global(g)),
            None => return Err(self.refuse(at, &format!("pickle global '{module}.{name}'"), "is not a tensor")),
        }
    }

    fn call(&self, callee: Value, args: Value, at: usize) -> Result<Value> {
        let (Value::Global(g), Value::Tuple(mut args)) = (callee, args) else {
            return Err(self.bad(at, "REDUCE of something that is not an allowed global with a tuple"));
        };
        match g {
            Global::OrderedDict if args.is_empty() => Ok(Value::Dict(Vec::new())),
            Global::RebuildTensor if args.len() >= 4 => {
                let Value::Storage(storage) = &args[0] else { return Err(self.bad(at, "a tensor without a storage")) };
                let (Some(offset), Some(size), Some(stride)) = (args[1].int(), args[2].ints(), args[3].ints()) else {
                    return Err(self.bad(at, "a tensor whose offset, size or stride are not integers"));
                };
                Ok(Value::Tensor(TensorRef { storage: storage.clone(), offset, size, stride }))
            }
            Global::RebuildParameter if matches!(args.first(), Some(Value::Tensor(_))) => Ok(args.swap_remove(0)),
            _ => return Err(self.bad(at, &format!("a call of {g:?} with {} arguments", args.len()))),
        }
    }

    /// `('storage', storage class, key, location, numel[, view_metadata])`.
    fn persistent(&self, pid: Value, at: usize) -> Result<Value> {
        let Value::Tuple(pid) = pid else { return Err(self.bad(at, "a persistent id that is not a tuple")) };
        match pid.as_slice() {
            [Value::Str(tag), Value::Global(Global::Storage(kind)), key, _location, _numel, view @ ..] if tag == "storage" => {
                let key = storage_key(key).ok_or_else(|| self.bad(at, "a storage key that is not a string"))?;
                // Legacy views (torch < 1.0): (view_key, offset, size) into the root storage `key`.
                let offset = match view {
                    [] | [Value::None] => 0,
                    [Value::Tuple(v)] if v.len() == 3 && v[1].int().is_some() => v[1].int().unwrap(),
                    _ => return Err(self.bad(at, "a storage persistent id with unknown view metadata")),
                };
                Ok(Value::Storage(StorageRef { key, kind: *kind, offset }))
            }
            // e.g. 'module': the source code of a whole pickled model
            [Value::Str(tag), ..] if tag != "storage" => {
                return Err(self.refuse(at, &format!("pickle persistent id '{tag}'"), "is not a tensor"))
            }
            _ => return Err(self.bad(at, "a storage persistent id that is not ('storage', class, key, location, numel)")),
        }
    }

    fn refuse(&self, at: usize, thing: &str, why: &str) -> anyhow::Error {
        anyhow!("refusing to load {}: {thing} at byte {at} {why} (aula never executes code from weight files)", self.what)
    }

    fn bad(&self, at: usize, found: &str) -> anyhow::Error {
        anyhow!("{} is not a valid torch state dict: found {found} at pickle byte {at}", self.what)
    }
}

/// Names of the pickle opcodes the interpreter refuses, for the error message.
fn opcode_name(op: u8) -> &'static str {
    match op {
        b'i' => "INST",
        b'o' => "OBJ",
        0x81 => "NEWOBJ",
        0x92 => "NEWOBJ_EX",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        b'P' => "PERSID",
        b'I' => "INT",
        b'L' => "LONG",
        0x8b => "LONG4",
        b'F' => "FLOAT",
        b'S' => "STRING",
        b'V' => "UNICODE",
        b'B' | b'C' | 0x8e => "BINBYTES",
        0x96 => "BYTEARRAY8",
        0x97 | 0x98 => "BUFFER",
        b'g' => "GET",
        b'p' => "PUT",
        b'l' => "LIST",
        b'd' => "DICT",
        b'0' => "POP",
        b'1' => "POP_MARK",
        b'2' => "DUP",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A pickle written by hand, opcode by opcode (protocol 2, as torch.save writes).
    #[derive(Default)]
    struct P(Vec<u8>);

    impl P {
        fn op(mut self, bytes: &[u8]) -> Self {
            self.0.extend_from_slice(bytes);
            self
        }
        fn proto(self) -> Self {
            self.op(&[0x80, 2])
        }
        fn global(self, module: &str, name: &str) -> Self {
            self.op(format!("c{module}\n{name}\n").as_bytes())
        }
        fn str(self, s: &str) -> Self {
            let mut b = vec![b'X'];
            b.extend((s.len() as u32).to_le_bytes());
            b.extend(s.as_bytes());
            self.op(&b)
        }
        fn int(self, i: i32) -> Self {
            let mut b = vec![b'J'];
            b.extend(i.to_le_bytes());
            self.op(&b)
        }
        fn ints(self, v: &[i32]) -> Self {
            v.iter().fold(self.op(b"("), |p, &i| p.int(i)).op(b"t")
        }
        fn put(self, i: u8) -> Self {
            self.op(&[b'q', i])
        }
        fn get(self, i: u8) -> Self {
            self.op(&[b'h', i])
        }
        /// `name: _rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())`,
        /// `storage` being the bytes that push the storage.
        fn tensor(self, name: &str, storage: impl FnOnce(P) -> P, offset: i32, size: &[i32], stride: &[i32]) -> Self {
            let p = self.str(name).global("torch._utils", "_rebuild_tensor_v2").op(b"(");
            storage(p)
                .int(offset)
                .ints(size)
                .ints(stride)
                .op(&[0x89])
                .global("collections", "OrderedDict")
                .op(b")R")
                .op(b"tR")
        }
    }

    /// The persistent id of a storage, memoized as torch does for its reuse.
    fn storage(class: &'static str, key: &'static str, numel: i32, legacy: bool, memo: u8) -> impl FnOnce(P) -> P {
        move |p| {
            let p = p.op(b"(").str("storage").global("torch", class).str(key).str("cpu").int(numel);
            let p = if legacy { p.op(b"N") } else { p };
            p.op(b"t").op(b"Q").put(memo)
        }
    }

    /// `{"a": float view (offset 2, 2×2), "b": long transposed view (3×2, stride (1, 3)),
    ///   "c": 0-dim view of a's storage, fetched back from the memo}`.
    fn state_dict(legacy: bool) -> Vec<u8> {
        P::default()
            .proto()
            .global("collections", "OrderedDict")
            .op(b")R")
            .put(0)
            .op(b"(")
            .tensor("a", storage("FloatStorage", "0", 6, legacy, 1), 2, &[2, 2], &[2, 1])
            .tensor("b", storage("LongStorage", "1", 6, legacy, 2), 0, &[3, 2], &[1, 3])
            .tensor("c", |p| p.get(1), 5, &[], &[])
            .op(b"u")
            // BUILD with the state dict's `_metadata`, as in real files.
            .op(b"}")
            .str("_metadata")
            .op(b"}")
            .op(b"sb.")
            .0
    }

    const FLOATS: [f32; 6] = [0., 1., 2., 3., 4., 5.];
    const LONGS: [i64; 6] = [10, 11, 12, 13, 14, 15];

    fn legacy_file(main: &[u8]) -> Vec<u8> {
        let mut f = vec![0x80, 2, 0x8a, 10, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, b'.'];
        f.extend(P::default().proto().op(b"M").op(&1001u16.to_le_bytes()).op(b".").0);
        f.extend(P::default().proto().op(b"}").str("little_endian").op(&[0x88]).op(b"s.").0);
        f.extend(main);
        f.extend(P::default().proto().op(b"]").op(b"(").str("0").str("1").op(b"e.").0);
        f.extend(6u64.to_le_bytes());
        f.extend(FLOATS.iter().flat_map(|v| v.to_le_bytes()));
        f.extend(6u64.to_le_bytes());
        f.extend(LONGS.iter().flat_map(|v| v.to_le_bytes()));
        f
    }

    fn zip_file(pkl: &[u8]) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let stored = zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored);
        let floats: Vec<u8> = FLOATS.iter().flat_map(|v| v.to_le_bytes()).collect();
        let longs: Vec<u8> = LONGS.iter().flat_map(|v| v.to_le_bytes()).collect();
        let entries: [(&str, &[u8]); 4] = [("archive/data.pkl", pkl), ("archive/byteorder", b"little"), ("archive/data/0", &floats), ("archive/data/1", &longs)];
        for (name, bytes) in entries {
            zip.start_file(name, stored).unwrap();
            zip.write_all(bytes).unwrap();
        }
        zip.finish().unwrap().into_inner()
    }

    fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn check_tensors(t: &NamedTensors) {
        assert_eq!(t.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
        let a = &t["a"];
        assert_eq!((a.kind(), a.size(), a.stride()), (Kind::Float, vec![2, 2], vec![2, 1]));
        assert_eq!(Vec::<f32>::try_from(a.flatten(0, -1)).unwrap(), [2., 3., 4., 5.]);
        let b = &t["b"];
        assert_eq!((b.kind(), b.size(), b.stride()), (Kind::Int64, vec![3, 2], vec![1, 3]));
        assert_eq!(Vec::<i64>::try_from(b.flatten(0, -1)).unwrap(), [10, 13, 11, 14, 12, 15]);
        assert_eq!((t["c"].size(), t["c"].double_value(&[])), (vec![], 5.0));
    }

    #[test]
    fn reads_legacy_state_dict_with_offsets_and_strided_views() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "m.pth", &legacy_file(&state_dict(true)));
        check_tensors(&read_pth(&path).unwrap());
        // and through the format-agnostic entry point
        check_tensors(&super::super::read_weights_file(&path).unwrap());
    }

    #[test]
    fn reads_zip_state_dict() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "m.pt", &zip_file(&state_dict(false)));
        check_tensors(&read_pth(&path).unwrap());
    }

    #[test]
    fn refuses_os_system() {
        // `os.system("echo pwned")`, the classic malicious pickle, right after the header.
        let evil = P::default().proto().global("os", "system").str("echo pwned").op(&[0x85]).op(b"R.").0;
        let dir = tempfile::tempdir().unwrap();
        let legacy = legacy_file(&evil);
        let main_at = legacy.windows(4).position(|w| w == b"cos\n").unwrap();
        let path = write(&dir, "evil.pth", &legacy);
        let err = read_pth(&path).unwrap_err().to_string();
        let expected = format!(
            "refusing to load {}: pickle global 'os.system' at byte {main_at} is not a tensor (aula never executes code from weight files)",
            path.display()
        );
        assert_eq!(err, expected);

        let path = write(&dir, "evil.pt", &zip_file(&evil));
        let err = read_pth(&path).unwrap_err().to_string();
        assert!(err.contains("pickle global 'os.system' at byte 2 is not a tensor"), "{err}");
        assert!(err.contains("archive/data.pkl"), "{err}");
    }

    #[test]
    fn refuses_other_code_paths() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&[u8], &str); 4] = [
            // protocol 4's STACK_GLOBAL naming builtins.eval
            (&P::default().op(&[0x80, 4]).op(&[0x8c, 8]).op(b"builtins").op(&[0x8c, 4]).op(b"eval").op(&[0x93, b'.']).0, "pickle global 'builtins.eval' at byte 18"),
            // INST calls a class by name
            (&P::default().proto().op(b"(iposix\nsystem\n.").0, "pickle opcode INST (0x69) at byte 3"),
            // a whole pickled model instead of its state dict
            (&P::default().proto().global("__main__", "Net").op(b")R.").0, "pickle global '__main__.Net' at byte 2"),
            // a persistent id that is not a storage (legacy 'module' source code)
            (&P::default().proto().op(b"(").str("module").op(b"tQ.").0, "pickle persistent id 'module' at byte 15"),
        ];
        for (pkl, expected) in cases {
            let err = read_pth(&write(&dir, "x.pt", &zip_file(pkl))).unwrap_err().to_string();
            assert!(err.starts_with("refusing to load") && err.contains(expected), "{err}");
        }
    }

    #[test]
    fn memo_bombs_and_deep_nesting_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        // a list that doubles 40 times through BINGET + APPENDS: 2^40 values if copied freely
        let mut bomb = P::default().proto().op(b"]").put(0);
        for _ in 0..40 {
            bomb = bomb.op(b"]").op(b"(").get(0).get(0).op(b"e").put(0);
        }
        let bomb = bomb.op(b".").0;
        let err = read_pth(&write(&dir, "x.pt", &zip_file(&bomb))).unwrap_err().to_string();
        assert!(err.contains("copied from the memo"), "{err}");
        // a million nested lists
        let mut deep = P::default().proto();
        for _ in 0..1_000_000 {
            deep = deep.op(b"]");
        }
        for _ in 0..1_000_000 {
            deep = deep.op(b"a");
        }
        let err = read_pth(&write(&dir, "x.pt", &zip_file(&deep.op(b".").0))).unwrap_err().to_string();
        assert!(err.contains("nested more than 64 deep"), "{err}");
    }

    #[test]
    fn truncated_files_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let full = legacy_file(&state_dict(true));
        for len in 0..full.len() {
            let path = write(&dir, "cut.pth", &full[..len]);
            let err = read_pth(&path).unwrap_err().to_string();
            assert!(err.contains("truncated") || err.contains("not a PyTorch file"), "at {len}: {err}");
        }
        let zip = zip_file(&state_dict(false));
        for len in [0, 10, zip.len() / 2, zip.len() - 1] {
            assert!(read_pth(&write(&dir, "cut.pt", &zip[..len])).is_err());
        }
    }

    #[test]
    fn views_outside_their_storage_are_refused() {
        let pkl = P::default()
            .proto()
            .op(b"}(")
            .tensor("w", storage("FloatStorage", "0", 6, false, 0), 4, &[2, 2], &[2, 1])
            .op(b"u.")
            .0;
        let dir = tempfile::tempdir().unwrap();
        let err = read_pth(&write(&dir, "x.pt", &zip_file(&pkl))).unwrap_err().to_string();
        assert!(err.contains("tensor w (size [2, 2], stride [2, 1], offset 4) does not fit its storage of 6 elements"), "{err}");
    }

    /// Not a unit test: compares with torch.save's own output when the benchmark
    /// venv (with torch) exists. `cargo test -p aula --lib weights::pth -- --ignored`
    #[test]
    #[ignore]
    fn matches_torch_save() {
        let python = crate::paths::cache_dir().join("venv-bench/bin/python");
        let dir = tempfile::tempdir().unwrap();
        let script = r#"
import sys, torch
torch.manual_seed(0)
base = torch.randn(4, 5)
sd = {"w": base, "t": base.t(), "s": base[1:, 2:], "h": torch.randn(3).half(),
      "n": torch.tensor(7), "b": torch.tensor([True, False]), "bf": torch.randn(2, 2).bfloat16(),
      "p": torch.nn.Parameter(torch.randn(2))}
torch.save(sd, sys.argv[1] + "/new.pt")
torch.save(sd, sys.argv[1] + "/old.pth", _use_new_zipfile_serialization=False)
torch.save(sd, sys.argv[1] + "/proto4.pt", pickle_protocol=4)  # FRAME, MEMOIZE, STACK_GLOBAL
for k, v in sd.items():
    print(k, *v.detach().double().flatten().tolist())
"#;
        let out = std::process::Command::new(&python).args(["-c", script, dir.path().to_str().unwrap()]).output();
        let Some(out) = out.ok().filter(|o| o.status.success()) else {
            eprintln!("skipped: no torch at {}", python.display());
            return;
        };
        for file in ["new.pt", "old.pth", "proto4.pt"] {
            let t = read_pth(&dir.path().join(file)).unwrap();
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                // every element, in row-major order: checks offsets and strides too
                let mut it = line.split(' ');
                let name = it.next().unwrap();
                let want: Vec<f64> = it.map(|v| v.parse().unwrap()).collect();
                let got = Vec::<f64>::try_from(t[name].to_kind(Kind::Double).flatten(0, -1)).unwrap();
                assert_eq!(got, want, "{file} {name}");
            }
            eprintln!("{file}: {} tensors match torch", t.len());
        }
    }
}
