//! tracefs: mounting it when missing, and reading tracepoint field offsets from format files, so
//! no offset is hard-coded for one kernel.

use std::{
    collections::HashMap,
    ffi::CString,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, anyhow, bail};

/// Where tracefs lives on current kernels; aya looks here first.
pub const TRACEFS: &str = "/sys/kernel/tracing";

/// Mounts tracefs at /sys/kernel/tracing unless it is already there. Returns whether it mounted.
pub fn ensure_mounted() -> Result<bool> {
    let events = Path::new(TRACEFS).join("events");
    if events.is_dir() {
        return Ok(false);
    }
    let target = CString::new(TRACEFS).expect("no NUL in a constant");
    let fstype = CString::new("tracefs").expect("no NUL in a constant");
    // SAFETY: all pointers are valid NUL-terminated strings; no mount data is passed.
    let rc = unsafe { libc::mount(fstype.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        bail!("tracefs is not mounted and mounting it at {TRACEFS} failed: {err}");
    }
    if !events.is_dir() {
        bail!(
            "mounted tracefs at {TRACEFS} but it has no events/ directory (kernel built without tracepoints?)"
        );
    }
    Ok(true)
}

/// One field of a tracepoint's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub offset: u32,
    pub size: u32,
}

/// The fields of one tracepoint, parsed from its format file.
#[derive(Debug, Clone)]
pub struct Format {
    /// `group:name`, for messages.
    pub name: String,
    fields: HashMap<String, Field>,
}

impl Format {
    /// Reads `<tracefs>/events/<group>/<name>/format`; a missing file means the kernel lacks the
    /// tracepoint, and the error says which.
    pub fn read(group: &str, name: &str) -> Result<Self> {
        Self::read_in(Path::new(TRACEFS), group, name)
    }

    pub fn read_in(tracefs: &Path, group: &str, name: &str) -> Result<Self> {
        let path: PathBuf = tracefs.join("events").join(group).join(name).join("format");
        let text = fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                anyhow!("this kernel has no tracepoint {group}:{name} ({} does not exist)", path.display())
            } else {
                anyhow!("reading {}: {e}", path.display())
            }
        })?;
        Self::parse(&format!("{group}:{name}"), &text)
    }

    /// Parses lines like `\tfield:pid_t next_pid;\toffset:56;\tsize:4;\tsigned:1;`.
    pub fn parse(name: &str, text: &str) -> Result<Self> {
        let mut fields = HashMap::new();
        for line in text.lines() {
            let line = line.trim();
            let Some(rest) = line.strip_prefix("field:") else { continue };
            let mut parts = rest.split(';').map(str::trim);
            let decl = parts.next().unwrap_or_default();
            let mut offset = None;
            let mut size = None;
            for part in parts {
                if let Some(v) = part.strip_prefix("offset:") {
                    offset = v.parse::<u32>().ok();
                } else if let Some(v) = part.strip_prefix("size:") {
                    size = v.parse::<u32>().ok();
                }
            }
            // The field name is the last word of the declaration, without any array suffix.
            let field_name = decl
                .rsplit(|c: char| c.is_whitespace() || c == '*')
                .next()
                .unwrap_or_default()
                .split('[')
                .next()
                .unwrap_or_default();
            if let (false, Some(offset), Some(size)) = (field_name.is_empty(), offset, size) {
                fields.insert(field_name.to_string(), Field { offset, size });
            }
        }
        if fields.is_empty() {
            bail!("the format of tracepoint {name} has no fields");
        }
        Ok(Self { name: name.to_string(), fields })
    }

    /// The named field; an error names the tracepoint and the field if this kernel lacks it.
    pub fn field(&self, name: &str) -> Result<Field> {
        self.fields
            .get(name)
            .copied()
            .with_context(|| format!("tracepoint {} has no field `{name}` on this kernel", self.name))
    }

    /// The named field, which must be `sizes` bytes wide (one of them).
    pub fn field_sized(&self, name: &str, sizes: &[u32]) -> Result<Field> {
        let f = self.field(name)?;
        if !sizes.contains(&f.size) {
            bail!(
                "tracepoint {} field `{name}` is {} bytes wide; geminst reads it as {sizes:?}",
                self.name,
                f.size
            );
        }
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHED_SWITCH: &str = "name: sched_switch
ID: 316
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:char prev_comm[16];\toffset:8;\tsize:16;\tsigned:0;
\tfield:pid_t prev_pid;\toffset:24;\tsize:4;\tsigned:1;
\tfield:long prev_state;\toffset:32;\tsize:8;\tsigned:1;
\tfield:pid_t next_pid;\toffset:56;\tsize:4;\tsigned:1;
\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;

print fmt: \"prev_comm=%s\"
";

    #[test]
    fn parses_offsets_sizes_and_array_and_pointer_names() {
        let f = Format::parse("sched:sched_switch", SCHED_SWITCH).unwrap();
        assert_eq!(f.field("next_pid").unwrap(), Field { offset: 56, size: 4 });
        assert_eq!(f.field("prev_state").unwrap(), Field { offset: 32, size: 8 });
        assert_eq!(f.field("prev_comm").unwrap(), Field { offset: 8, size: 16 });
        assert_eq!(f.field("skaddr").unwrap(), Field { offset: 8, size: 8 });
        assert_eq!(f.field("common_pid").unwrap(), Field { offset: 4, size: 4 });
    }

    #[test]
    fn missing_field_and_wrong_size_are_named() {
        let f = Format::parse("sched:sched_switch", SCHED_SWITCH).unwrap();
        let err = f.field("nope").unwrap_err().to_string();
        assert!(err.contains("sched:sched_switch") && err.contains("nope"), "{err}");
        let err = f.field_sized("next_pid", &[8]).unwrap_err().to_string();
        assert!(err.contains("4 bytes"), "{err}");
    }

    #[test]
    fn missing_tracepoint_is_named() {
        let dir = std::env::temp_dir().join(format!("geminst-tracefs-{}", std::process::id()));
        let err = Format::read_in(&dir, "sched", "no_such_event").unwrap_err().to_string();
        assert!(err.contains("sched:no_such_event"), "{err}");
    }
}
