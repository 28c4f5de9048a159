//! A reader of the kernel's BTF (/sys/kernel/btf/vmlinux), just enough to find where a field sits
//! in a kernel struct on this kernel. Rust eBPF emits no CO-RE relocations, so the few kernel
//! fields geminst reads directly get their offsets from here, at load time, never hard-coded.
//!
//! Format: Documentation/bpf/btf.rst (header, then type records, then a string table).

use std::{collections::HashMap, path::Path};

use anyhow::{Context, Result, bail, ensure};

const BTF_MAGIC: u16 = 0xeb9f;

// Kinds (include/uapi/linux/btf.h).
const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, Clone)]
struct Member {
    name: String,
    type_id: u32,
    bit_offset: u32,
}

#[derive(Debug, Clone)]
enum Type {
    /// A struct or union with its members.
    Composite {
        name: String,
        members: Vec<Member>,
    },
    /// A type that only qualifies or renames another (typedef, const, volatile, ...).
    Alias(u32),
    Other,
}

/// The types of one BTF blob, by id (id 0 is `void`).
pub struct Btf {
    types: Vec<Type>,
    by_name: HashMap<String, Vec<u32>>,
}

fn u32_at(data: &[u8], at: usize) -> Result<u32> {
    let bytes = data.get(at..at + 4).context("BTF is truncated")?;
    Ok(u32::from_le_bytes(bytes.try_into().expect("4 bytes")))
}

impl Btf {
    /// The running kernel's BTF.
    pub fn vmlinux() -> Result<Self> {
        Self::read(Path::new("/sys/kernel/btf/vmlinux"))
    }

    pub fn read(path: &Path) -> Result<Self> {
        let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&data).with_context(|| format!("parsing BTF from {}", path.display()))
    }

    pub fn parse(data: &[u8]) -> Result<Self> {
        ensure!(data.len() >= 24, "BTF is shorter than its header");
        let magic = u16::from_le_bytes([data[0], data[1]]);
        ensure!(magic == BTF_MAGIC, "not little-endian BTF (magic {magic:#x})");
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let strings =
            data.get(hdr_len + str_off..hdr_len + str_off + str_len).context("BTF strings out of range")?;
        let name = |off: u32| -> String {
            let s = strings.get(off as usize..).unwrap_or_default();
            let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
            String::from_utf8_lossy(&s[..end]).into_owned()
        };
        let types_data =
            data.get(hdr_len + type_off..hdr_len + type_off + type_len).context("BTF types out of range")?;

        let mut types = vec![Type::Other]; // id 0: void
        let mut by_name: HashMap<String, Vec<u32>> = HashMap::new();
        let mut at = 0;
        while at < types_data.len() {
            let name_off = u32_at(types_data, at)?;
            let info = u32_at(types_data, at + 4)?;
            let size_or_type = u32_at(types_data, at + 8)?;
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let ty = match kind {
                KIND_STRUCT | KIND_UNION => {
                    let mut members = Vec::with_capacity(vlen);
                    for i in 0..vlen {
                        let m = at + i * 12;
                        let offset = u32_at(types_data, m + 8)?;
                        members.push(Member {
                            name: name(u32_at(types_data, m)?),
                            type_id: u32_at(types_data, m + 4)?,
                            // With kind_flag, the top 8 bits hold a bitfield size.
                            bit_offset: if kind_flag { offset & 0x00ff_ffff } else { offset },
                        });
                    }
                    at += vlen * 12;
                    Type::Composite { name: name(name_off), members }
                }
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    Type::Alias(size_or_type)
                }
                _ => {
                    at += match kind {
                        KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                        KIND_ARRAY => 12,
                        KIND_ENUM | KIND_FUNC_PROTO => vlen * 8,
                        KIND_DATASEC | KIND_ENUM64 => vlen * 12,
                        KIND_PTR | KIND_FWD | KIND_FUNC | KIND_FLOAT => 0,
                        other => bail!("unknown BTF kind {other}"),
                    };
                    Type::Other
                }
            };
            if let Type::Composite { name, .. } = &ty
                && !name.is_empty()
            {
                by_name.entry(name.clone()).or_default().push(types.len() as u32);
            }
            types.push(ty);
        }
        Ok(Self { types, by_name })
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..32 {
            match self.types.get(id as usize)? {
                Type::Alias(next) => id = *next,
                t => return Some(t),
            }
        }
        None
    }

    /// Bit offset of `field` in composite `id`, looking into anonymous members; and the field's type.
    fn find(&self, id: u32, field: &str) -> Option<(u32, u32)> {
        let Type::Composite { members, .. } = self.resolve(id)? else { return None };
        for m in members {
            if m.name == field {
                return Some((m.bit_offset, m.type_id));
            }
            if m.name.is_empty()
                && let Some((inner, ty)) = self.find(m.type_id, field)
            {
                return Some((m.bit_offset + inner, ty));
            }
        }
        None
    }

    /// Byte offset of `path` (e.g. `["se", "sum_exec_runtime"]`) inside struct `name`.
    pub fn offset_of(&self, name: &str, path: &[&str]) -> Result<u32> {
        let ids = self.by_name.get(name).with_context(|| format!("BTF has no struct {name}"))?;
        // Forward declarations have no members; take the first full definition.
        let mut id = *ids
            .iter()
            .find(|&&i| matches!(&self.types[i as usize], Type::Composite { members, .. } if !members.is_empty()))
            .with_context(|| format!("BTF has only empty definitions of struct {name}"))?;
        let mut bits = 0;
        for field in path {
            let (off, ty) = self
                .find(id, field)
                .with_context(|| format!("BTF: struct {name} has no field {}", path.join(".")))?;
            bits += off;
            id = ty;
        }
        ensure!(bits % 8 == 0, "{name}.{} is a bitfield", path.join("."));
        Ok(bits / 8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a BTF blob: `struct inner { u64 a; u64 b; }`, `typedef struct inner inner_t;`,
    /// `struct outer { int x; union { int y; inner_t in; }; }` (anonymous union at byte 8).
    fn blob() -> Vec<u8> {
        let strings = b"\0inner\0a\0b\0inner_t\0outer\0x\0y\0in\0int\0";
        let s = |name: &str| -> u32 {
            let pos = strings
                .windows(name.len() + 2)
                .position(|w| w[0] == 0 && &w[1..=name.len()] == name.as_bytes() && w[name.len() + 1] == 0);
            pos.unwrap() as u32 + 1
        };
        let mut t = Vec::new();
        let mut ty = |name: u32, kind: u32, vlen: u32, size: u32, extra: &[u32]| {
            for v in [name, kind << 24 | vlen, size].iter().chain(extra) {
                t.extend_from_slice(&v.to_le_bytes());
            }
        };
        ty(s("int"), KIND_INT, 0, 4, &[32]); // 1: int
        ty(s("inner"), KIND_STRUCT, 2, 16, &[s("a"), 1, 0, s("b"), 1, 64]); // 2
        ty(s("inner_t"), KIND_TYPEDEF, 0, 2, &[]); // 3
        ty(0, KIND_UNION, 2, 16, &[s("y"), 1, 0, s("in"), 3, 0]); // 4: anonymous union
        ty(s("outer"), KIND_STRUCT, 2, 24, &[s("x"), 1, 0, 0, 4, 64]); // 5
        let mut out = Vec::new();
        for v in [u32::from(BTF_MAGIC) | 1 << 16, 24, 0, t.len() as u32, t.len() as u32, strings.len() as u32]
        {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&t);
        out.extend_from_slice(strings);
        out
    }

    #[test]
    fn finds_offsets_through_anonymous_unions_and_typedefs() {
        let btf = Btf::parse(&blob()).unwrap();
        assert_eq!(btf.offset_of("outer", &["x"]).unwrap(), 0);
        assert_eq!(btf.offset_of("outer", &["y"]).unwrap(), 8);
        assert_eq!(btf.offset_of("outer", &["in", "b"]).unwrap(), 16);
        assert!(
            btf.offset_of("outer", &["nope"]).unwrap_err().to_string().contains("outer has no field nope")
        );
        assert!(btf.offset_of("missing", &["x"]).is_err());
    }

    #[test]
    fn rejects_garbage() {
        assert!(Btf::parse(&[0u8; 10]).is_err());
        assert!(Btf::parse(&[0u8; 64]).is_err());
        let mut b = blob();
        b.truncate(40);
        assert!(Btf::parse(&b).is_err());
    }

    #[test]
    fn reads_this_kernels_task_struct() {
        // Every kernel geminst supports has BTF; a bare build machine without it skips.
        let Ok(btf) = Btf::vmlinux() else {
            eprintln!("SKIPPED: no /sys/kernel/btf/vmlinux");
            return;
        };
        let se = btf.offset_of("task_struct", &["se"]).unwrap();
        let total = btf.offset_of("task_struct", &["se", "sum_exec_runtime"]).unwrap();
        assert!(total > se && total % 8 == 0, "se at {se}, sum_exec_runtime at {total}");
    }
}
