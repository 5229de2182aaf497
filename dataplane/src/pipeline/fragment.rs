//! IPv4 fragmentation (RFC 791 section 3.2) of a packet too big for its
//! egress, when DF is clear. The buffer keeps the first fragment (with all
//! options); later fragments are built in buffers from the pool and carry
//! only the options whose copied flag is set. Offsets and MF compose with a
//! packet that was already a fragment. All or nothing: if a buffer is short,
//! every fragment made so far goes back to the pool.

use super::{L3_OFFSET, MAX_FRAGMENTS};
use crate::buffer::{BufPool, PacketBuf};
use crate::counters::DropReason;
use crate::wire::ipv4;

/// Options of `opts` with the copied flag, padded to 4 bytes, into `out`.
fn copied_options(opts: &[u8], out: &mut [u8; 40]) -> usize {
    let (mut i, mut n) = (0, 0);
    while i < opts.len() {
        let ty = opts[i];
        match ty {
            0 => break,
            1 => i += 1,
            _ => {
                let Some(&len) = opts.get(i + 1) else { break };
                let len = len as usize;
                if len < 2 || i + len > opts.len() {
                    break;
                }
                if ty & 0x80 != 0 && n + len <= out.len() {
                    out[n..n + len].copy_from_slice(&opts[i..i + len]);
                    n += len;
                }
                i += len;
            }
        }
    }
    let padded = (n + 3) & !3;
    out[n..padded].fill(0);
    padded
}

/// Cuts the IPv4 packet at `L3_OFFSET` of `buf` into fragments of at most
/// `max_ip_len` bytes: `buf` becomes the first, `out` receives the rest in order.
pub(crate) fn fragment<P: BufPool>(
    buf: &mut P::Buf,
    max_ip_len: usize,
    pool: &mut P,
    out: &mut Vec<P::Buf>,
) -> Result<(), DropReason> {
    let (hl, first_chunk, base_off) = {
        let d = buf.data();
        let ip = ipv4::Packet::new_unchecked(&d[L3_OFFSET..]);
        let hl = ip.header_len();
        let payload_len = ip.total_len() as usize - hl;
        let base_off = ip.frag_offset() as usize;
        let orig_mf = ip.more_frags();
        let mut opts = [0u8; 40];
        let opts_len = copied_options(ip.options(), &mut opts);
        let hl2 = ipv4::HEADER_LEN + opts_len;
        if max_ip_len < hl + 8 || max_ip_len < hl2 + 8 {
            return Err(DropReason::TooManyFragments);
        }
        let first_chunk = (max_ip_len - hl) & !7;
        let later_chunk = (max_ip_len - hl2) & !7;
        let rest = payload_len.saturating_sub(first_chunk);
        let count = 1 + rest.div_ceil(later_chunk);
        if count > MAX_FRAGMENTS || base_off + payload_len > 0xfff8 {
            return Err(DropReason::TooManyFragments);
        }
        let mut off = first_chunk;
        while off < payload_len {
            let len = later_chunk.min(payload_len - off);
            let Some(mut f) = pool.alloc() else {
                out.drain(..).for_each(|b| pool.free(b));
                return Err(DropReason::NoBuffer);
            };
            if !f.append(L3_OFFSET + hl2 + len) {
                pool.free(f);
                out.drain(..).for_each(|b| pool.free(b));
                return Err(DropReason::NoBuffer);
            }
            let fd = f.data_mut();
            fd[..L3_OFFSET + ipv4::HEADER_LEN].copy_from_slice(&d[..L3_OFFSET + ipv4::HEADER_LEN]);
            fd[L3_OFFSET + ipv4::HEADER_LEN..L3_OFFSET + hl2].copy_from_slice(&opts[..opts_len]);
            let src = L3_OFFSET + hl + off;
            fd[L3_OFFSET + hl2..].copy_from_slice(&d[src..src + len]);
            let mut fip = ipv4::Packet::new_unchecked(&mut fd[L3_OFFSET..]);
            fip.set_version_and_header_len(hl2);
            fip.set_total_len((hl2 + len) as u16);
            let last = off + len == payload_len;
            fip.set_flags_and_frag_offset(false, !last || orig_mf, (base_off + off) as u16);
            fip.fill_checksum();
            out.push(f);
            off += len;
        }
        (hl, first_chunk, base_off)
    };
    let d = buf.data_mut();
    let mut ip = ipv4::Packet::new_unchecked(&mut d[L3_OFFSET..]);
    ip.set_total_len((hl + first_chunk) as u16);
    ip.set_flags_and_frag_offset(false, true, base_off as u16);
    ip.fill_checksum();
    buf.truncate(L3_OFFSET + hl + first_chunk);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_copied_options_are_kept_and_padded() {
        // NOP, record route (not copied, len 7), security (copied 0x82, len 4 here), EOL
        let opts = [1, 7, 7, 4, 0, 0, 0, 0, 0x82, 4, 0xab, 0xcd, 0, 0, 0, 0];
        let mut out = [0xffu8; 40];
        let n = copied_options(&opts, &mut out);
        assert_eq!(n, 4);
        assert_eq!(&out[..4], &[0x82, 4, 0xab, 0xcd]);
        let bad = [0x83, 40];
        assert_eq!(
            copied_options(&bad, &mut out),
            0,
            "a length past the end stops the walk"
        );
    }
}
