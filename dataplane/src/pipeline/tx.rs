//! Stage 5: per-output-port TX lists.
//!
//! Each port has a list with a fixed capacity, allocated when the tables
//! first show the port (control path), never on the packet path. The port
//! layer drains the lists it finds in [`TxLists::dirty`] after each burst.

use crate::tables::PortId;

/// Packets waiting to be sent, by output port.
#[derive(Debug)]
pub struct TxLists<B> {
    lists: Vec<Vec<B>>,
    dirty: Vec<PortId>,
    capacity: usize,
}

impl<B> TxLists<B> {
    /// Lists of `capacity` packets each.
    pub fn new(capacity: usize) -> Self {
        TxLists {
            lists: Vec::new(),
            dirty: Vec::new(),
            capacity: capacity.max(1),
        }
    }

    /// Makes sure ports `0..n` have lists (allocates only when `n` grew).
    pub fn ensure_ports(&mut self, n: usize) {
        if self.lists.len() < n {
            let cap = self.capacity;
            self.lists.resize_with(n, || Vec::with_capacity(cap));
            self.dirty.reserve(n.saturating_sub(self.dirty.capacity()));
        }
    }

    /// Queues `buf` on `port`; gives it back if the list is full or the
    /// port unknown.
    #[inline]
    pub fn push(&mut self, port: PortId, buf: B) -> Result<(), B> {
        let Some(list) = self.lists.get_mut(port as usize) else {
            return Err(buf);
        };
        if list.len() >= self.capacity {
            return Err(buf);
        }
        if list.is_empty() {
            self.dirty.push(port);
        }
        list.push(buf);
        Ok(())
    }

    /// Ports with queued packets, in the order they were first used.
    pub fn dirty(&self) -> &[PortId] {
        &self.dirty
    }

    /// Calls `send` with every non-empty list; `send` takes out what it sends
    /// and must leave the list empty (dropping what it could not send, after
    /// counting it).
    pub fn flush(&mut self, mut send: impl FnMut(PortId, &mut Vec<B>)) {
        for &port in &self.dirty {
            if let Some(list) = self.lists.get_mut(port as usize) {
                send(port, list);
                list.clear();
            }
        }
        self.dirty.clear();
    }

    /// Packets queued on `port`.
    pub fn queued(&self, port: PortId) -> usize {
        self.lists.get(port as usize).map_or(0, Vec::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_bounded_and_flush_in_first_use_order() {
        let mut tx = TxLists::new(2);
        assert_eq!(tx.push(0, 1u32), Err(1), "no lists before ensure_ports");
        tx.ensure_ports(3);
        tx.push(2, 10).unwrap();
        tx.push(0, 20).unwrap();
        tx.push(2, 11).unwrap();
        assert_eq!(tx.push(2, 12), Err(12));
        assert_eq!(tx.push(7, 1), Err(1));
        assert_eq!(tx.dirty(), &[2, 0]);
        let mut seen = Vec::new();
        tx.flush(|p, l| seen.push((p, std::mem::take(l))));
        assert_eq!(seen, vec![(2, vec![10, 11]), (0, vec![20])]);
        assert!(tx.dirty().is_empty());
        assert_eq!(tx.queued(2), 0);
    }
}
