//! Bringing up `lo` without iproute2: the guest initrd holds only the agent.

use std::os::fd::AsRawFd;

use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};

use super::GuestError;

nix::ioctl_read_bad!(get_flags, libc::SIOCGIFFLAGS, libc::ifreq);
nix::ioctl_write_ptr_bad!(set_flags, libc::SIOCSIFFLAGS, libc::ifreq);

/// Sets IFF_UP on the loopback interface (the kernel assigns 127.0.0.1 itself).
pub fn loopback_up() -> Result<(), GuestError> {
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(GuestError::Loopback)?;
    // SAFETY: ifreq is plain old data; all-zero is a valid (empty) request.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq naming "lo"; the socket is open for the whole call.
    unsafe { get_flags(sock.as_raw_fd(), &raw mut req) }.map_err(GuestError::Loopback)?;
    // SAFETY: SIOCGIFFLAGS filled the `ifru_flags` member of the union.
    unsafe {
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
    }
    // SAFETY: as above; SIOCSIFFLAGS reads `ifru_flags`.
    unsafe { set_flags(sock.as_raw_fd(), &raw const req) }.map_err(GuestError::Loopback)?;
    Ok(())
}
