//! Guest physical memory layout (x86_64), shared by the boot code and the devices.

/// GDT loaded before the kernel's own.
pub const BOOT_GDT_START: u64 = 0x500;
/// Empty IDT loaded before the kernel's own.
pub const BOOT_IDT_START: u64 = 0x520;
/// The zero page (`struct boot_params`) of the 64-bit boot protocol.
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Identity-mapping page tables: PML4, PDPT, PD.
pub const PML4_START: u64 = 0x9000;
/// Page-directory-pointer table.
pub const PDPTE_START: u64 = 0xa000;
/// Page directory (2 MiB pages).
pub const PDE_START: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Largest command line we pass (the kernel's COMMAND_LINE_SIZE on x86).
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// Start of the extended BIOS data area; the MP table lives here. Low RAM ends here.
pub const EBDA_START: u64 = 0x9fc00;
/// Start of high memory, where the kernel is loaded.
pub const HIMEM_START: u64 = 0x100000;
/// Start of the 32-bit MMIO gap (devices live here; no RAM).
pub const MMIO_GAP_START: u64 = 0xd000_0000;
/// End of the 32-bit MMIO gap (4 GiB).
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// The boot marker: a guest write here is logged with the time since the VMM started.
pub const MARKER_ADDR: u64 = MMIO_GAP_START;
/// Size of the marker's MMIO window.
pub const MARKER_SIZE: u64 = 0x1000;
/// First virtio-mmio device window; each device takes `VIRTIO_MMIO_SIZE` bytes.
pub const VIRTIO_MMIO_START: u64 = MMIO_GAP_START + 0x1000;
/// Size of one virtio-mmio window.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// First interrupt line given to virtio devices (0..=4 are legacy: timer, i8042, serial).
pub const VIRTIO_IRQ_BASE: u32 = 5;
/// Number of virtio-mmio windows (one interrupt line each, below the IOAPIC's last input).
pub const VIRTIO_SLOTS: u32 = IRQ_MAX - VIRTIO_IRQ_BASE + 1;
/// Highest IOAPIC input.
pub const IRQ_MAX: u32 = 23;
/// KVM needs three pages for the TSS just below the BIOS area on Intel.
pub const KVM_TSS_ADDRESS: usize = 0xfffb_d000;
/// Local APIC base address (default).
pub const APIC_DEFAULT_PHYS_BASE: u32 = 0xfee0_0000;
/// IOAPIC base address (default).
pub const IOAPIC_DEFAULT_PHYS_BASE: u32 = 0xfec0_0000;
