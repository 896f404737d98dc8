//! A minimal level-triggered epoll set, for load generators that drive
//! hundreds of sockets from one thread: poll(2) costs time in proportion to
//! every socket it is given, on every call, which at tens of thousands of
//! calls per second made poll most of a generator thread's CPU; epoll
//! costs in proportion to the sockets that are ready.

use std::io;
use std::os::fd::RawFd;

pub struct Epoll {
    fd: RawFd,
    events: Vec<libc::epoll_event>,
}

/// Readable, and writable too when `write`.
pub fn interest(write: bool) -> u32 {
    (libc::EPOLLIN | if write { libc::EPOLLOUT } else { 0 }) as u32
}

pub const READABLE: u32 = (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR | libc::EPOLLRDHUP) as u32;
pub const WRITABLE: u32 = libc::EPOLLOUT as u32;

impl Epoll {
    /// Room for `batch` ready sockets per wait.
    pub fn new(batch: usize) -> io::Result<Epoll> {
        // SAFETY: plain system call; the descriptor is owned by the result.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Epoll { fd, events: vec![libc::epoll_event { events: 0, u64: 0 }; batch.max(1)] })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: `ev` is valid for the call; the kernel copies it.
        if unsafe { libc::epoll_ctl(self.fd, op, fd, &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Watches `fd` for `events` (none: stops watching it), reported with
    /// `token`; `before` is what it was watched for until now (0: nothing).
    pub fn watch(&self, fd: RawFd, token: u64, before: u32, events: u32) -> io::Result<()> {
        match (before, events) {
            (b, e) if b == e => Ok(()),
            (0, e) => self.ctl(libc::EPOLL_CTL_ADD, fd, token, e),
            (_, 0) => self.ctl(libc::EPOLL_CTL_DEL, fd, token, 0),
            (_, e) => self.ctl(libc::EPOLL_CTL_MOD, fd, token, e),
        }
    }

    /// Waits up to `ms` milliseconds; the ready sockets as (token, events).
    pub fn wait(&mut self, ms: libc::c_int) -> io::Result<impl Iterator<Item = (u64, u32)> + '_> {
        // SAFETY: `events` is a valid array of this length for the call.
        let n = unsafe { libc::epoll_wait(self.fd, self.events.as_mut_ptr(), self.events.len() as libc::c_int, ms) };
        let n = if n >= 0 {
            n as usize
        } else {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
            0
        };
        Ok(self.events[..n].iter().map(|e: &libc::epoll_event| (e.u64, e.events)))
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: the descriptor was opened by `new` and is closed once.
        unsafe { libc::close(self.fd) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;

    #[test]
    fn reports_only_the_ready_socket_with_its_token() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut a_peer, _) = listener.accept().unwrap();
        let b = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_b_peer, _) = listener.accept().unwrap();
        let mut ep = Epoll::new(8).unwrap();
        ep.watch(a.as_raw_fd(), 7, 0, interest(false)).unwrap();
        ep.watch(b.as_raw_fd(), 9, 0, interest(false)).unwrap();
        assert_eq!(ep.wait(0).unwrap().count(), 0, "nothing is readable yet");
        a_peer.write_all(b"x").unwrap();
        let ready: Vec<(u64, u32)> = ep.wait(1000).unwrap().collect();
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].0, 7);
        assert_ne!(ready[0].1 & READABLE, 0);
        // Writable interest reports b at once; dropping it stops that.
        ep.watch(b.as_raw_fd(), 9, interest(false), interest(true)).unwrap();
        let ready: Vec<(u64, u32)> = ep.wait(0).unwrap().filter(|r| r.0 == 9).collect();
        assert_eq!(ready.len(), 1);
        assert_ne!(ready[0].1 & WRITABLE, 0);
        ep.watch(b.as_raw_fd(), 9, interest(true), 0).unwrap();
        assert!(ep.wait(0).unwrap().all(|r| r.0 != 9));
    }
}
