//! A TCP listener that keeps track of its connections, so that stopping the server can cut
//! every one of them (watch streams included) at once, as an API server crash would.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use nix::sched::CloneFlags;
use nix::sys::socket::Shutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use kproxy_rig::{Error, Result};

/// The open connections of one listener: a duplicate of each socket, to shut it down.
#[derive(Debug, Default)]
pub(crate) struct Connections {
    next: AtomicU64,
    open: Mutex<HashMap<u64, OwnedFd>>,
}

impl Connections {
    fn open(&self) -> MutexGuard<'_, HashMap<u64, OwnedFd>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Shuts every open connection down (both directions): its reads end and its writes
    /// fail, so the server drops it and the client sees the connection close.
    pub(crate) fn shutdown_all(&self) {
        for fd in self.open().values() {
            let _ = nix::sys::socket::shutdown(fd.as_raw_fd(), Shutdown::Both);
        }
    }
}

/// Removes a connection from [`Connections`] when it is dropped.
struct Registration {
    id: u64,
    connections: Arc<Connections>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.connections.open().remove(&self.id);
    }
}

/// An accepted connection.
pub(crate) struct Connection {
    _registration: Registration,
    stream: TcpStream,
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A listener registering every connection it accepts.
pub(crate) struct TrackedListener {
    listener: TcpListener,
    connections: Arc<Connections>,
}

impl TrackedListener {
    /// Wraps a listener; its connections are registered in `connections`.
    pub(crate) fn new(listener: TcpListener, connections: Arc<Connections>) -> Self {
        TrackedListener {
            listener,
            connections,
        }
    }
}

impl axum::serve::Listener for TrackedListener {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Connection, SocketAddr) {
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let Ok(duplicate) = stream.as_fd().try_clone_to_owned() else {
                        continue;
                    };
                    let id = self.connections.next.fetch_add(1, Ordering::Relaxed);
                    self.connections.open().insert(id, duplicate);
                    let registration = Registration {
                        id,
                        connections: self.connections.clone(),
                    };
                    return (
                        Connection {
                            _registration: registration,
                            stream,
                        },
                        peer,
                    );
                }
                // Out of file descriptors and the like: wait, as axum's own listener does.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// Binds a listener to `addr`, inside the network namespace at `netns` (a `/run/netns/NAME`
/// path) when given, else in the current one. The socket stays in that namespace.
pub(crate) fn bind(netns: Option<&Path>, addr: SocketAddr) -> Result<TcpListener> {
    let listener = match netns {
        None => std::net::TcpListener::bind(addr).map_err(|error| {
            Error::io(format!("binding the API-server stand-in to {addr}"), error)
        })?,
        Some(path) => std::thread::scope(|scope| {
            scope
                .spawn(|| -> Result<std::net::TcpListener> {
                    let context = || format!("entering namespace {}", path.display());
                    let file = std::fs::File::open(path).map_err(|e| Error::io(context(), e))?;
                    nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
                        .map_err(|errno| Error::io(context(), errno.into()))?;
                    std::net::TcpListener::bind(addr).map_err(|error| {
                        Error::io(
                            format!(
                                "binding the API-server stand-in to {addr} in {}",
                                path.display()
                            ),
                            error,
                        )
                    })
                })
                .join()
                .unwrap_or_else(|_| {
                    Err(Error::World(format!(
                        "a thread entering {} panicked",
                        path.display()
                    )))
                })
        })?,
    };
    listener
        .set_nonblocking(true)
        .map_err(|error| Error::io("set_nonblocking", error))?;
    TcpListener::from_std(listener).map_err(|error| Error::io("registering the listener", error))
}
