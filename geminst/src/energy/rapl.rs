//! RAPL (running average power limit) energy counters, through the kernel's powercap interface:
//! /sys/class/powercap/intel-rapl:N/energy_uj for each package N (AMD's are exposed the same
//! way). The counters are cumulative microjoules that wrap at max_energy_range_uj.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

struct Domain {
    name: String,
    energy: PathBuf,
    range_uj: u64,
    last_uj: u64,
}

pub struct Rapl {
    domains: Vec<Domain>,
    /// Energy since `open`, all packages, in microjoules.
    total_uj: u128,
}

fn read_u64(path: &Path) -> Result<u64> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.trim().parse().with_context(|| format!("{} does not hold a number", path.display()))
}

impl Rapl {
    /// Finds the package domains (`intel-rapl:N`, not their sub-zones `intel-rapl:N:M`).
    pub fn open(root: &Path) -> Result<Self> {
        let entries =
            fs::read_dir(root).with_context(|| format!("no powercap interface at {}", root.display()))?;
        let mut domains = Vec::new();
        for e in entries.flatten() {
            let dir = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(index) = name.strip_prefix("intel-rapl:") else { continue };
            if index.contains(':') {
                continue;
            }
            let energy = dir.join("energy_uj");
            let last_uj = read_u64(&energy)?;
            let range_uj = read_u64(&dir.join("max_energy_range_uj"))?;
            let label = fs::read_to_string(dir.join("name")).map(|s| s.trim().to_string()).unwrap_or(name);
            domains.push(Domain { name: label, energy, range_uj, last_uj });
        }
        if domains.is_empty() {
            bail!("{} has no RAPL package domain (intel-rapl:N)", root.display());
        }
        domains.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Self { domains, total_uj: 0 })
    }

    pub fn domains(&self) -> Vec<String> {
        self.domains.iter().map(|d| d.name.clone()).collect()
    }

    /// Energy since `open`, in joules. A counter that went down wrapped at its range once (read
    /// often enough, it cannot wrap twice: ranges are minutes at full power).
    pub fn read_j(&mut self) -> f64 {
        for d in &mut self.domains {
            let Ok(now) = read_u64(&d.energy) else { continue };
            let delta = if now >= d.last_uj { now - d.last_uj } else { d.range_uj - d.last_uj + now };
            self.total_uj += u128::from(delta);
            d.last_uj = now;
        }
        self.total_uj as f64 / 1e6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_tree(name: &str) -> PathBuf {
        let root = std::env::temp_dir().join(format!("geminst-rapl-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        for (dir, label, energy) in [
            ("intel-rapl:0", "package-0", 1_000),
            ("intel-rapl:1", "package-1", 2_000),
            ("intel-rapl:0:0", "core", 50),
        ] {
            let d = root.join(dir);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("name"), format!("{label}\n")).unwrap();
            fs::write(d.join("energy_uj"), format!("{energy}\n")).unwrap();
            fs::write(d.join("max_energy_range_uj"), "10000\n").unwrap();
        }
        root
    }

    #[test]
    fn sums_packages_and_handles_wraparound() {
        let root = fake_tree("wrap");
        let mut r = Rapl::open(&root).unwrap();
        assert_eq!(r.domains(), vec!["package-0", "package-1"], "sub-zones are not counted");
        assert_eq!(r.read_j(), 0.0);
        fs::write(root.join("intel-rapl:0/energy_uj"), "4000").unwrap();
        fs::write(root.join("intel-rapl:1/energy_uj"), "2500").unwrap();
        assert!((r.read_j() - 0.0035).abs() < 1e-12);
        // Package 0 wraps: 4000 -> 9999 -> 0 -> 1000 is 7000 µJ.
        fs::write(root.join("intel-rapl:0/energy_uj"), "1000").unwrap();
        assert!((r.read_j() - 0.0105).abs() < 1e-12);
    }

    #[test]
    fn no_rapl_is_an_error_naming_the_place() {
        let root = std::env::temp_dir().join(format!("geminst-rapl-none-{}", std::process::id()));
        fs::create_dir_all(&root).unwrap();
        let e = Rapl::open(&root).err().unwrap().to_string();
        assert!(e.contains("no RAPL package domain"), "{e}");
        let e = Rapl::open(&root.join("missing")).err().unwrap().to_string();
        assert!(e.contains("no powercap interface"), "{e}");
    }
}
