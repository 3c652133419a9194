//! A loopback proxy per directed peer link, so that the nemesis can cut links.
//!
//! Node `from` reaches node `to` through its own listener (`LocalClusterConfig::peer_routes`),
//! one per shard port. Quasar sends a node's Raft messages to a peer only on the connection
//! it dialed itself, so cutting the link `from -> to` silences exactly the messages from
//! `from` to `to`: cutting both directions is a symmetric partition, one direction a
//! one-way partition.
//!
//! While a link is cut, its open connections are shut down and new ones are accepted and
//! then held without a byte forwarded (a blackhole: the dialer's handshake times out); when
//! the link heals, the held connections are closed so that the dialer redials. Bytes are
//! never dropped from the middle of a live connection: a TCP stream that lost bytes would
//! be a corrupted stream, not a network fault.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;

/// How often an idle accept loop looks at the stop flag.
const ACCEPT_POLL: Duration = Duration::from_millis(20);
/// Bound on connecting to the real node.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A directed link between two nodes.
pub type Link = (u64, u64);

#[derive(Default)]
struct LinkState {
    cut: bool,
    /// Sockets of this link's connections (both ends of forwarded ones, the held ones), by
    /// connection number.
    open: Vec<(u64, TcpStream)>,
}

impl LinkState {
    fn close_all(&mut self) {
        for (_, s) in self.open.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

type Links = Arc<Mutex<BTreeMap<Link, LinkState>>>;

fn lock(links: &Links) -> std::sync::MutexGuard<'_, BTreeMap<Link, LinkState>> {
    links.lock().unwrap_or_else(|e| e.into_inner())
}

/// The proxies of every directed link of a cluster.
pub struct Proxies {
    links: Links,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Where node `from` dials node `to` (shard 0).
    pub routes: BTreeMap<Link, SocketAddr>,
}

impl Proxies {
    /// Listens for every link of `nodes` (ids 1..=n) and shard on ports from `base` (a free
    /// block of 100), forwarding to `listen(to)` + shard.
    pub fn start(
        nodes: u64,
        shards: u16,
        base: u16,
        listen: impl Fn(u64) -> SocketAddr,
    ) -> anyhow::Result<Proxies> {
        let links: Links = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let mut routes = BTreeMap::new();
        let mut port = base;
        for from in 1..=nodes {
            for to in (1..=nodes).filter(|&to| to != from) {
                lock(&links).insert((from, to), LinkState::default());
                routes.insert((from, to), SocketAddr::from(([127, 0, 0, 1], port)));
                for shard in 0..shards {
                    let listener = TcpListener::bind(("127.0.0.1", port))
                        .with_context(|| format!("proxy of link {from}->{to}: port {port}"))?;
                    listener.set_nonblocking(true)?;
                    let real = listen(to);
                    let dest = SocketAddr::new(real.ip(), real.port() + shard);
                    let (links, stop) = (links.clone(), stop.clone());
                    threads.push(std::thread::spawn(move || {
                        accept_loop(listener, dest, (from, to), &links, &stop)
                    }));
                    port += 1;
                }
            }
        }
        Ok(Proxies {
            links,
            stop,
            threads,
            routes,
        })
    }

    /// Cuts the given links (closing their connections); the others are left as they are.
    pub fn cut(&self, cut: &[Link]) {
        let mut links = lock(&self.links);
        for link in cut {
            if let Some(state) = links.get_mut(link) {
                state.cut = true;
                state.close_all();
            }
        }
    }

    /// Heals every link; connections held while cut are closed so that dialers redial.
    pub fn heal(&self) {
        let mut links = lock(&self.links);
        for state in links.values_mut() {
            if state.cut {
                state.cut = false;
                state.close_all();
            }
        }
    }
}

impl Drop for Proxies {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for state in lock(&self.links).values_mut() {
            state.close_all();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    dest: SocketAddr,
    link: Link,
    links: &Links,
    stop: &AtomicBool,
) {
    let mut next_id = 0u64;
    while !stop.load(Ordering::Relaxed) {
        next_id += 1;
        let id = next_id;
        let conn = match listener.accept() {
            Ok((conn, _)) => conn,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(ACCEPT_POLL);
                continue;
            }
            Err(_) => {
                std::thread::sleep(ACCEPT_POLL);
                continue;
            }
        };
        if conn.set_nonblocking(false).is_err() {
            continue;
        }
        let _ = conn.set_nodelay(true);
        if lock(links).get(&link).is_some_and(|s| s.cut) {
            hold(conn, id, link, links);
            continue;
        }
        let Ok(upstream) = TcpStream::connect_timeout(&dest, CONNECT_TIMEOUT) else {
            // The node is down: so is the connection.
            continue;
        };
        let _ = upstream.set_nodelay(true);
        let clones = (conn.try_clone(), upstream.try_clone());
        let (Ok(conn2), Ok(upstream2)) = clones else {
            continue;
        };
        {
            let mut guard = lock(links);
            let Some(state) = guard.get_mut(&link) else {
                continue;
            };
            if state.cut {
                // Cut while connecting.
                drop(guard);
                hold(conn, id, link, links);
                continue;
            }
            let (Ok(a), Ok(b)) = (conn.try_clone(), upstream.try_clone()) else {
                continue;
            };
            state.open.push((id, a));
            state.open.push((id, b));
        }
        let links2 = links.clone();
        std::thread::spawn(move || pump(conn, upstream));
        std::thread::spawn(move || {
            pump(upstream2, conn2);
            // Both directions end when either does: forget this connection's sockets.
            if let Some(state) = lock(&links2).get_mut(&link) {
                state.open.retain(|(c, _)| *c != id);
            }
        });
    }
}

/// Keeps an accepted connection of a cut link open without forwarding anything.
fn hold(conn: TcpStream, id: u64, link: Link, links: &Links) {
    if let Some(state) = lock(links).get_mut(&link) {
        state.open.push((id, conn));
    }
}

/// Copies bytes from `from` to `to` until either side closes; then closes both.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on a free port: every connection gets its bytes back.
    fn echo() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        std::thread::spawn(move || {
            for mut c in l.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 1024];
                    while let Ok(n @ 1..) = c.read(&mut buf) {
                        if c.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    fn round_trip(addr: SocketAddr) -> std::io::Result<Vec<u8>> {
        let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        c.set_read_timeout(Some(Duration::from_millis(300)))?;
        c.write_all(b"ping")?;
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf)?;
        Ok(buf.to_vec())
    }

    #[test]
    fn a_cut_link_forwards_nothing_until_healed() {
        let server = echo();
        let base = quasar_node::local_cluster::free_base_port().expect("ports");
        let p = Proxies::start(2, 1, base, |_| server).expect("proxies");
        let (to2, to1) = (p.routes[&(1, 2)], p.routes[&(2, 1)]);
        assert_eq!(round_trip(to2).expect("through 1->2"), b"ping");

        // An open connection is closed by the cut; a new one is held silent.
        let mut open = TcpStream::connect(to2).expect("connect");
        open.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        open.write_all(b"ping").expect("write");
        let mut buf = [0u8; 4];
        open.read_exact(&mut buf).expect("echo before the cut");
        p.cut(&[(1, 2)]);
        assert!(
            matches!(open.read(&mut buf), Ok(0) | Err(_)),
            "closed by the cut"
        );
        assert!(round_trip(to2).is_err(), "a cut link forwards nothing");
        assert_eq!(round_trip(to1).expect("the other direction"), b"ping");

        p.heal();
        assert_eq!(round_trip(to2).expect("healed"), b"ping");
    }
}
