//! Process memory figures from /proc, for benchmarks.

/// Resident memory of `pid` in KiB, split into mappings at least `big_kib` large (guest RAM) and
/// everything else (the VMM's own footprint).
#[derive(Debug, Clone, Copy, Default)]
pub struct Footprint {
    /// RSS of the large mappings (guest RAM).
    pub guest_kib: u64,
    /// RSS of all other mappings.
    pub own_kib: u64,
    /// Proportional set size of the other mappings.
    pub own_pss_kib: u64,
}

/// Reads /proc/<pid>/smaps.
pub fn footprint(pid: u32, big_kib: u64) -> std::io::Result<Footprint> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))?;
    Ok(parse_smaps(&smaps, big_kib))
}

fn field(line: &str, name: &str) -> Option<u64> {
    line.strip_prefix(name)?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Parses smaps text (see [`footprint`]).
pub fn parse_smaps(smaps: &str, big_kib: u64) -> Footprint {
    let mut fp = Footprint::default();
    let mut big = false;
    for line in smaps.lines() {
        if let Some(size) = field(line, "Size:") {
            big = size >= big_kib;
        } else if let Some(rss) = field(line, "Rss:") {
            if big {
                fp.guest_kib += rss;
            } else {
                fp.own_kib += rss;
            }
        } else if let Some(pss) = field(line, "Pss:") {
            if !big {
                fp.own_pss_kib += pss;
            }
        }
    }
    fp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_big_mappings_from_the_rest() {
        let smaps = "7f00-7f10 rw-p 0 00:00 0\nSize: 131072 kB\nRss: 5000 kB\nPss: 5000 kB\n\
                     5500-5510 r-xp 0 08:01 1 /bin/x\nSize: 1000 kB\nRss: 800 kB\nPss: 400 kB\n";
        let fp = parse_smaps(smaps, 131072);
        assert_eq!(fp.guest_kib, 5000);
        assert_eq!(fp.own_kib, 800);
        assert_eq!(fp.own_pss_kib, 400);
    }
}
