//! A TCP relay a test controls, between a client and a server (PostgreSQL, a tessera): it
//! forwards, cuts, or black-holes.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

const UP: u8 = 0;
const CUT: u8 = 1;
const BLACKHOLE: u8 = 2;

/// A TCP relay to a server (the machine's PostgreSQL, a tessera) that the test controls:
/// - up: bytes are forwarded both ways;
/// - [`Relay::cut`]: every relayed connection is closed at once and new ones are accepted and
///   closed straight away, as with a server that went away, until [`Relay::restore`];
/// - [`Relay::blackhole`]: connections stay open (new ones are accepted and held) but no byte
///   goes through in either direction, as with a network that drops packets. On
///   [`Relay::restore`] every connection held meanwhile is closed, and what it had sent is
///   never delivered.
///
/// Threads: one accepting, two per relayed connection; all joined when dropped.
pub struct Relay {
    /// The loopback port it listens on.
    pub port: u16,
    inner: Arc<RelayInner>,
    acceptor: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("port", &self.port)
            .field("target", &self.inner.target)
            .finish_non_exhaustive()
    }
}

struct RelayInner {
    target: String,
    /// The mode, for the pumps to read without the lock; written under `links`' lock.
    mode: AtomicU8,
    links: Mutex<Links>,
    stop: AtomicBool,
}

#[derive(Default)]
struct Links {
    open: Vec<Link>,
    pumps: Vec<JoinHandle<()>>,
}

/// One relayed (or held) connection: its sockets, and whether it is closed.
struct Link {
    sockets: Vec<TcpStream>,
    closed: Arc<AtomicBool>,
}

impl Link {
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        for s in &self.sockets {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Relay {
    /// A relay on a free loopback port to `target` (`host:port`).
    pub fn start(target: &str) -> Relay {
        Relay::on(TcpListener::bind("127.0.0.1:0").unwrap(), target)
    }

    /// A relay on `listener` (bound before the target was known: a server whose public URL is
    /// the relay's) to `target` (`host:port`).
    pub fn on(listener: TcpListener, target: &str) -> Relay {
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let inner = Arc::new(RelayInner {
            target: target.to_owned(),
            mode: AtomicU8::new(UP),
            links: Mutex::new(Links::default()),
            stop: AtomicBool::new(false),
        });
        let acceptor = {
            let inner = Arc::clone(&inner);
            std::thread::spawn(move || {
                while !inner.stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((client, _)) => inner.accepted(client),
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Relay {
            port,
            inner,
            acceptor: Some(acceptor),
        }
    }

    /// Closes every connection at once; new ones are closed as soon as accepted.
    pub fn cut(&self) {
        let mut links = self.inner.links.lock().unwrap();
        self.inner.mode.store(CUT, Ordering::SeqCst);
        for l in links.open.drain(..) {
            l.close();
        }
    }

    /// Forwards nothing more, either way, on existing and new connections alike.
    pub fn blackhole(&self) {
        let _links = self.inner.links.lock().unwrap();
        self.inner.mode.store(BLACKHOLE, Ordering::SeqCst);
    }

    /// Forwards again. After a black hole, the connections held through it are closed first.
    pub fn restore(&self) {
        let mut links = self.inner.links.lock().unwrap();
        if self.inner.mode.load(Ordering::SeqCst) == BLACKHOLE {
            for l in links.open.drain(..) {
                l.close();
            }
        }
        self.inner.mode.store(UP, Ordering::SeqCst);
    }

    /// How many connections it holds open now.
    pub fn connections(&self) -> usize {
        let mut links = self.inner.links.lock().unwrap();
        links.open.retain(|l| !l.closed.load(Ordering::SeqCst));
        links.open.len()
    }
}

impl RelayInner {
    fn accepted(self: &Arc<Self>, client: TcpStream) {
        // Accepted sockets do not inherit the listener's non-blocking mode on every platform.
        let _ = client.set_nonblocking(false);
        let _ = client.set_nodelay(true);
        // Connect first (not under the lock), then decide under the lock, so a cut made
        // meanwhile is never missed.
        let server = if self.mode.load(Ordering::SeqCst) == UP {
            self.target
                .parse()
                .ok()
                .and_then(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).ok())
        } else {
            None
        };
        let mut links = self.links.lock().unwrap();
        links.open.retain(|l| !l.closed.load(Ordering::SeqCst));
        links.pumps.retain(|p| !p.is_finished());
        let closed = Arc::new(AtomicBool::new(false));
        match (self.mode.load(Ordering::SeqCst), server) {
            (BLACKHOLE, server) => {
                // Held: accepted, never read, closed on restore.
                let mut sockets = vec![client];
                sockets.extend(server);
                links.open.push(Link { sockets, closed });
            }
            (UP, Some(server)) => {
                let _ = server.set_nodelay(true);
                let link = Link {
                    sockets: vec![client.try_clone().unwrap(), server.try_clone().unwrap()],
                    closed: Arc::clone(&closed),
                };
                for (from, to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let (inner, closed) = (Arc::clone(self), Arc::clone(&closed));
                    links
                        .pumps
                        .push(std::thread::spawn(move || inner.pump(from, to, &closed)));
                }
                links.open.push(link);
            }
            (_, server) => {
                // Cut (or the database refused us): closed at once.
                let _ = client.shutdown(Shutdown::Both);
                if let Some(s) = server {
                    let _ = s.shutdown(Shutdown::Both);
                }
            }
        }
    }

    /// Copies `from` to `to` while the relay is up. In a black hole it reads nothing, and what
    /// it had read is held; closing the link discards it.
    fn pump(&self, mut from: TcpStream, mut to: TcpStream, closed: &AtomicBool) {
        let _ = from.set_read_timeout(Some(Duration::from_millis(20)));
        let _ = to.set_write_timeout(Some(Duration::from_secs(5)));
        let done = || closed.load(Ordering::SeqCst) || self.stop.load(Ordering::SeqCst);
        let holding = || self.mode.load(Ordering::SeqCst) == BLACKHOLE;
        let mut buf = vec![0u8; 16 * 1024];
        while !done() {
            if holding() {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    while holding() && !done() {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    if done() || to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
        closed.store(true, Ordering::SeqCst);
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        let pumps = {
            let mut links = self.inner.links.lock().unwrap();
            for l in links.open.drain(..) {
                l.close();
            }
            std::mem::take(&mut links.pumps)
        };
        for p in pumps {
            let _ = p.join();
        }
    }
}
