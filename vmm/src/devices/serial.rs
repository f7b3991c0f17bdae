//! The 8250 UART at 0x3f8 (IRQ 4), from vm-superio, writing the guest console to a sink.

use crate::bus::BusDevice;
use std::io::Write;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

/// Base I/O port of COM1.
pub const PORT_BASE: u64 = 0x3f8;
/// Ports covered.
pub const PORT_LEN: u64 = 8;
/// Interrupt line.
pub const IRQ: u32 = 4;

/// Raises the serial interrupt through an irqfd.
pub struct IrqTrigger(pub EventFd);

impl Trigger for IrqTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// A console sink shared with whoever reads the output.
pub type ConsoleSink = Box<dyn Write + Send>;

/// The console UART.
pub struct SerialConsole {
    inner: Serial<IrqTrigger, vm_superio::serial::NoEvents, ConsoleSink>,
}

impl SerialConsole {
    /// A UART raising `irq` and writing to `sink`.
    pub fn new(irq: EventFd, sink: ConsoleSink) -> Self {
        Self {
            inner: Serial::new(IrqTrigger(irq), sink),
        }
    }

    /// A UART continuing from a snapshot.
    pub fn from_state(
        state: &vm_superio::serial::SerialState,
        irq: EventFd,
        sink: ConsoleSink,
    ) -> Result<Self, String> {
        Serial::from_state(state, IrqTrigger(irq), vm_superio::serial::NoEvents, sink)
            .map(|inner| Self { inner })
            .map_err(|e| format!("serial state: {e:?}"))
    }

    /// The UART's registers.
    pub fn state(&self) -> vm_superio::serial::SerialState {
        self.inner.state()
    }

    /// Flushes the sink.
    pub fn flush(&mut self) {
        let _ = self.inner.writer_mut().flush();
    }
}

impl BusDevice for SerialConsole {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if let (Some(b), true) = (data.first_mut(), offset < PORT_LEN) {
            *b = self.inner.read(offset as u8);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Some(&b), true) = (data.first(), offset < PORT_LEN) {
            if let Err(e) = self.inner.write(offset as u8, b) {
                tracing::debug!("serial write: {e:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn transmitted_bytes_reach_the_sink() {
        let cap = Capture::default();
        let mut s = SerialConsole::new(
            EventFd::new(libc::EFD_NONBLOCK).unwrap(),
            Box::new(cap.clone()),
        );
        for b in b"hi" {
            s.write(0, &[*b]);
        }
        assert_eq!(&*cap.0.lock().unwrap(), b"hi");
        let mut lsr = [0u8];
        s.read(5, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0, "transmitter empty");
    }
}
