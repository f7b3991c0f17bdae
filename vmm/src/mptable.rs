//! The Intel MP table (MP spec 1.4) that tells a guest without ACPI about its CPUs, the IOAPIC
//! and how the ISA interrupts are wired.

use crate::layout::{APIC_DEFAULT_PHYS_BASE, EBDA_START, IOAPIC_DEFAULT_PHYS_BASE, IRQ_MAX};
use crate::memory::GuestMemoryMmap;
use vm_memory::{Bytes, GuestAddress};

const APIC_VERSION: u8 = 0x14;
const CPU_ENABLED: u8 = 1;
const CPU_BOOTPROCESSOR: u8 = 2;
const CPU_STEPPING: u32 = 0x600;
const CPU_FEATURE_APIC: u32 = 0x200;
const CPU_FEATURE_FPU: u32 = 0x001;
const BUS_ISA: u8 = 0;
const MP_IRQ_INT: u8 = 0;
const MP_IRQ_NMI: u8 = 1;
const MP_IRQ_EXTINT: u8 = 3;
const FLOATING_LEN: usize = 16;
const HEADER_LEN: usize = 44;
/// Space the table may use (the first KiB of the EBDA).
const MAX_LEN: usize = 1024;

/// Errors writing the MP table.
#[derive(Debug, thiserror::Error)]
pub enum MptableError {
    /// Too many vCPUs for the space below 640 KiB.
    #[error("{0} vCPUs do not fit in the MP table")]
    TooManyCpus(u8),
    /// Guest memory write failed.
    #[error("cannot write the MP table into guest memory")]
    GuestWrite,
}

fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)))
}

/// Builds the floating pointer and configuration table for `cpus` vCPUs, placed at `base`.
pub fn build(cpus: u8, base: u64) -> Result<Vec<u8>, MptableError> {
    let ioapic_id = cpus + 1;
    let mut entries: Vec<u8> = Vec::new();
    let mut count: u16 = 0;
    for id in 0..cpus {
        let flags = CPU_ENABLED | if id == 0 { CPU_BOOTPROCESSOR } else { 0 };
        entries.extend([0u8, id, APIC_VERSION, flags]);
        entries.extend(CPU_STEPPING.to_le_bytes());
        entries.extend((CPU_FEATURE_APIC | CPU_FEATURE_FPU).to_le_bytes());
        entries.extend([0u8; 8]);
        count += 1;
    }
    entries.extend([1u8, BUS_ISA]);
    entries.extend(b"ISA   ");
    count += 1;
    entries.extend([2u8, ioapic_id, APIC_VERSION, 1]);
    entries.extend(IOAPIC_DEFAULT_PHYS_BASE.to_le_bytes());
    count += 1;
    for irq in 0..=IRQ_MAX as u8 {
        entries.extend([3u8, MP_IRQ_INT, 0, 0, BUS_ISA, irq, ioapic_id, irq]);
        count += 1;
    }
    entries.extend([4u8, MP_IRQ_EXTINT, 0, 0, BUS_ISA, 0, 0, 0]);
    entries.extend([4u8, MP_IRQ_NMI, 0, 0, BUS_ISA, 0, 0xff, 1]);
    count += 2;

    let table_len = HEADER_LEN + entries.len();
    if FLOATING_LEN + table_len > MAX_LEN {
        return Err(MptableError::TooManyCpus(cpus));
    }
    let mut table = Vec::with_capacity(table_len);
    table.extend(b"PCMP");
    table.extend((table_len as u16).to_le_bytes());
    table.extend([4u8, 0]); // spec revision, checksum (below)
    table.extend(b"KENNEL  ");
    table.extend(b"MICROVM     ");
    table.extend(0u32.to_le_bytes()); // OEM table pointer
    table.extend(0u16.to_le_bytes()); // OEM table size
    table.extend(count.to_le_bytes());
    table.extend(APIC_DEFAULT_PHYS_BASE.to_le_bytes());
    table.extend(0u32.to_le_bytes()); // extended table length, checksum, reserved
    table.extend(entries);
    table[7] = checksum(&table);

    let mut out = Vec::with_capacity(FLOATING_LEN + table_len);
    out.extend(b"_MP_");
    out.extend(((base + FLOATING_LEN as u64) as u32).to_le_bytes());
    out.extend([1u8, 4, 0, 0, 0, 0, 0, 0]); // length (16-byte units), revision, checksum, features
    out[10] = checksum(&out);
    out.extend(table);
    Ok(out)
}

/// Writes the MP table for `cpus` vCPUs at the start of the EBDA.
pub fn write(mem: &GuestMemoryMmap, cpus: u8) -> Result<(), MptableError> {
    let bytes = build(cpus, EBDA_START)?;
    mem.write_slice(&bytes, GuestAddress(EBDA_START))
        .map_err(|_| MptableError::GuestWrite)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_are_zero_and_lengths_match() {
        let bytes = build(4, EBDA_START).unwrap();
        assert_eq!(&bytes[..4], b"_MP_");
        assert_eq!(bytes[..16].iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        let table = &bytes[16..];
        assert_eq!(&table[..4], b"PCMP");
        let len = u16::from_le_bytes([table[4], table[5]]) as usize;
        assert_eq!(len, table.len());
        assert_eq!(table.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        let count = u16::from_le_bytes([table[34], table[35]]);
        assert_eq!(count as u32, 4 + 1 + 1 + (IRQ_MAX + 1) + 2);
        let ptr = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        assert_eq!(ptr as u64, EBDA_START + 16);
    }

    #[test]
    fn too_many_cpus_is_an_error() {
        assert!(matches!(
            build(200, EBDA_START),
            Err(MptableError::TooManyCpus(200))
        ));
    }
}
