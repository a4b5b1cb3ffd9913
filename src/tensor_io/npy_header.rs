//! The header of a `.npy` file: magic, version, and the Python dict literal
//! `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 32, 32), }` that numpy writes
//! (numpy's `lib/format.py`). Only what numpy writes is accepted; anything else is an error.
use anyhow::{bail, ensure, Context, Result};
use tch::Kind;

const MAGIC: &[u8] = b"\x93NUMPY";

pub(super) struct Header {
    pub descr: String,
    pub kind: Kind,
    pub shape: Vec<usize>,
    /// Where the array's bytes start.
    pub data_offset: usize,
}

impl Header {
    pub fn parse(bytes: &[u8]) -> Result<Header> {
        ensure!(
            bytes.len() >= 10 && bytes.starts_with(MAGIC),
            "no .npy magic (\\x93NUMPY) at the start"
        );
        let (len, start): (usize, usize) = match bytes[6] {
            1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
            2 | 3 => {
                ensure!(bytes.len() >= 12, "truncated header");
                let len = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
                (usize::try_from(len).context("header length overflows")?, 12)
            }
            v => bail!("unsupported .npy format version {v} (numpy writes 1 to 3)"),
        };
        let end = start
            .checked_add(len)
            .filter(|&e| e <= bytes.len())
            .with_context(|| {
                format!(
                    "the header is {len} bytes but the file holds {}",
                    bytes.len()
                )
            })?;
        let text = std::str::from_utf8(&bytes[start..end]).context("the header is not text")?;
        let dict = Dict::parse(text).with_context(|| format!("malformed header {text:?}"))?;
        ensure!(
            !dict.fortran_order,
            "Fortran-order arrays are not supported: save with numpy's default C order"
        );
        let kind = kind_of(&dict.descr)?;
        Ok(Header {
            descr: dict.descr,
            kind,
            shape: dict.shape,
            data_offset: end,
        })
    }
}

/// The libtorch kind of a numpy dtype string; big-endian and non-numeric types are refused.
fn kind_of(descr: &str) -> Result<Kind> {
    let code = descr
        .strip_prefix(['<', '|', '='])
        .with_context(|| format!("dtype {descr:?}: only little-endian arrays are supported"))?;
    Ok(match code {
        "b1" => Kind::Bool,
        "u1" => Kind::Uint8,
        "i1" => Kind::Int8,
        "i2" => Kind::Int16,
        "i4" => Kind::Int,
        "i8" => Kind::Int64,
        "f2" => Kind::Half,
        "f4" => Kind::Float,
        "f8" => Kind::Double,
        _ => bail!("dtype {descr:?} is not supported (bool, int8-64, uint8, float16-64 are)"),
    })
}

struct Dict {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

enum Value {
    Str(String),
    Bool(bool),
    Tuple(Vec<usize>),
}

/// A cursor over the header text.
struct Cursor<'a> {
    rest: &'a str,
}

impl Cursor<'_> {
    fn skip_ws(&mut self) {
        self.rest = self.rest.trim_start();
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_ws();
        match self.rest.strip_prefix(token) {
            Some(r) => {
                self.rest = r;
                true
            }
            None => false,
        }
    }

    fn expect(&mut self, token: &str) -> Result<()> {
        ensure!(self.eat(token), "expected `{token}`");
        Ok(())
    }

    fn string(&mut self) -> Result<String> {
        self.skip_ws();
        let quote = self.rest.chars().next().context("expected a string")?;
        ensure!(quote == '\'' || quote == '"', "expected a string");
        let body = &self.rest[1..];
        let end = body.find(quote).context("unterminated string")?;
        self.rest = &body[end + 1..];
        Ok(body[..end].to_string())
    }

    fn integer(&mut self) -> Result<usize> {
        self.skip_ws();
        let end = self
            .rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(self.rest.len());
        ensure!(end > 0, "expected a dimension");
        let n = self.rest[..end]
            .parse()
            .with_context(|| format!("dimension {} is too large", &self.rest[..end]))?;
        self.rest = &self.rest[end..];
        Ok(n)
    }

    fn value(&mut self) -> Result<Value> {
        if self.eat("True") {
            return Ok(Value::Bool(true));
        }
        if self.eat("False") {
            return Ok(Value::Bool(false));
        }
        if self.eat("(") {
            let mut dims = Vec::new();
            while !self.eat(")") {
                dims.push(self.integer()?);
                if !self.eat(",") {
                    self.expect(")")?;
                    break;
                }
            }
            return Ok(Value::Tuple(dims));
        }
        Ok(Value::Str(self.string()?))
    }
}

impl Dict {
    fn parse(text: &str) -> Result<Dict> {
        let mut c = Cursor { rest: text };
        c.expect("{")?;
        let (mut descr, mut fortran_order, mut shape) = (None, None, None);
        while !c.eat("}") {
            let key = c.string()?;
            c.expect(":")?;
            match (key.as_str(), c.value()?) {
                ("descr", Value::Str(s)) => descr = Some(s),
                ("fortran_order", Value::Bool(b)) => fortran_order = Some(b),
                ("shape", Value::Tuple(t)) => shape = Some(t),
                (k, _) => bail!("unexpected key or value type for `{k}`"),
            }
            if !c.eat(",") {
                c.expect("}")?;
                break;
            }
        }
        ensure!(c.rest.trim().is_empty(), "text after the dict");
        Ok(Dict {
            descr: descr.context("no `descr`")?,
            fortran_order: fortran_order.context("no `fortran_order`")?,
            shape: shape.context("no `shape`")?,
        })
    }
}
