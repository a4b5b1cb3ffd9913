//! Tensor files that come from outside (backdoor targets, FID statistics, released weights),
//! read through checks that compare the header with the data before a tensor is built.
//!
//! tch's `Tensor::read_npy`/`read_npz` copy as many bytes as the header's shape says, whatever
//! the file holds: a header larger than its data gives a tensor of heap memory or a segfault.
//! Here every header is parsed by us (`.npy`) or by the `safetensors` crate (which checks each
//! tensor's offsets against its shape and the file's length), every dimension must fit libtorch's
//! i64, and the data must be exactly as long as the shape and dtype say.
use std::io::Read;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use tch::{Kind, Tensor};

mod npy_header;

/// A `.npy` file as one tensor; the error names the file.
pub fn read_npy(path: &Path) -> Result<Tensor> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    parse_npy(&bytes).with_context(|| format!("{} is not a valid .npy file", path.display()))
}

/// A `.npz` archive (numpy's `savez`/`savez_compressed`) as named tensors, each member checked
/// as [`parse_npy`] does; names lose their `.npy` suffix, as numpy's `load` shows them.
pub fn read_npz(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let context = || format!("{} is not a valid .npz file", path.display());
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file)).with_context(context)?;
    let mut out = Vec::with_capacity(zip.len());
    for i in 0..zip.len() {
        let mut member = zip.by_index(i).with_context(context)?;
        let name = member.name().to_string();
        let mut bytes = Vec::new();
        member
            .read_to_end(&mut bytes)
            .with_context(|| format!("member {name}"))
            .with_context(context)?;
        let tensor = parse_npy(&bytes)
            .with_context(|| format!("member {name}"))
            .with_context(context)?;
        let name = name.strip_suffix(".npy").unwrap_or(&name).to_string();
        out.push((name, tensor));
    }
    Ok(out)
}

/// A `.safetensors` file as named tensors, sorted by name; the error names the file.
pub fn read_safetensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    parse_safetensors(&bytes)
        .with_context(|| format!("{} is not a valid safetensors file", path.display()))
}

/// The bytes of a `.npy` file (format versions 1 to 3, C order, little-endian or byte types).
pub fn parse_npy(bytes: &[u8]) -> Result<Tensor> {
    let header = npy_header::Header::parse(bytes)?;
    let data = &bytes[header.data_offset..];
    from_data(data, &header.shape, header.kind, &header.descr)
}

/// The bytes of a `.safetensors` file as named tensors, sorted by name.
pub fn parse_safetensors(bytes: &[u8]) -> Result<Vec<(String, Tensor)>> {
    use safetensors::Dtype;
    let file = safetensors::SafeTensors::deserialize(bytes)?;
    let mut out = Vec::new();
    for (name, view) in file.tensors() {
        let kind = match view.dtype() {
            Dtype::BOOL => Kind::Bool,
            Dtype::U8 => Kind::Uint8,
            Dtype::I8 => Kind::Int8,
            Dtype::I16 => Kind::Int16,
            Dtype::I32 => Kind::Int,
            Dtype::I64 => Kind::Int64,
            Dtype::F16 => Kind::Half,
            Dtype::BF16 => Kind::BFloat16,
            Dtype::F32 => Kind::Float,
            Dtype::F64 => Kind::Double,
            other => bail!("tensor {name}: dtype {other:?} has no libtorch equivalent"),
        };
        let t = from_data(
            view.data(),
            view.shape(),
            kind,
            &format!("{:?}", view.dtype()),
        )
        .with_context(|| format!("tensor {name}"))?;
        out.push((name, t));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Builds a tensor only when `data` is exactly as long as `shape` × the element size says.
fn from_data(data: &[u8], shape: &[usize], kind: Kind, dtype: &str) -> Result<Tensor> {
    let dims = shape
        .iter()
        .map(|&d| i64::try_from(d))
        .collect::<Result<Vec<i64>, _>>()
        .ok()
        .with_context(|| format!("shape {shape:?} has a dimension beyond libtorch's range"))?;
    let need = shape
        .iter()
        .try_fold(kind.elt_size_in_bytes(), |n, &d| n.checked_mul(d))
        .with_context(|| format!("shape {shape:?} of {dtype} overflows the address space"))?;
    ensure!(
        data.len() == need,
        "the header says shape {shape:?} of {dtype}, which is {need} bytes of data, but the file \
         holds {} bytes: the file is {}",
        data.len(),
        if data.len() < need {
            "truncated or its header lies"
        } else {
            "longer than its header says"
        }
    );
    Ok(Tensor::f_from_data_size(data, &dims, kind)?)
}

/// sha256 of a tensor's float32 little-endian bytes (a stable name for a trigger or target tensor).
pub fn tensor_sha256(t: &Tensor) -> String {
    let t = t
        .to_kind(tch::Kind::Float)
        .to_device(tch::Device::Cpu)
        .contiguous();
    let v = Vec::<f32>::try_from(t.flatten(0, -1))
        .expect("a contiguous float32 CPU tensor converts to Vec<f32>");
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    crate::files::sha256_hex(&bytes)
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
