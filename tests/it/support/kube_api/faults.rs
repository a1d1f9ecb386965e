//! Fault injection: the faults still to apply, and the cuttable connections
//! through which [`Fault::Drop`] closes a connection without an answer.

use std::{
    collections::VecDeque,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use axum::{extract::connect_info::Connected, http::Method, serve::IncomingStream};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
};

use super::Fault;

/// Faults set with [`super::KubeApi::fail_next`], [`super::KubeApi::fail_all`]
/// and [`super::KubeApi::set_down`].
#[derive(Default)]
pub(super) struct Faults {
    /// One entry per write request still to fail.
    pub(super) queued: VecDeque<Fault>,
    /// Fault for every request, until recovered.
    pub(super) every: Option<Fault>,
    /// Writes answer 503.
    pub(super) down: bool,
    /// Every write fails with this, until recovered.
    pub(super) writes: Option<Fault>,
}

impl Faults {
    /// The fault, if any, for the next request with this method.
    pub(super) fn take(&mut self, method: &Method) -> Option<Fault> {
        if let Some(fault) = &self.every {
            return Some(fault.clone());
        }
        if *method == Method::GET || *method == Method::HEAD {
            return None;
        }
        if self.down {
            return Some(Fault::Status(503));
        }
        if let Some(fault) = &self.writes {
            return Some(fault.clone());
        }
        self.queued.pop_front()
    }
}

/// Accepts TCP connections that a handler can cut ([`Fault::Drop`]).
pub(super) struct CuttableListener(pub(super) TcpListener);

impl axum::serve::Listener for CuttableListener {
    type Io = CuttableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (CuttableStream, SocketAddr) {
        let (stream, addr) = axum::serve::Listener::accept(&mut self.0).await;
        let stream = CuttableStream {
            inner: stream,
            cut: Arc::default(),
        };
        (stream, addr)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// A TCP stream that, once cut, reads end-of-stream and fails every write, so
/// the HTTP server closes it without sending anything more.
pub(super) struct CuttableStream {
    inner: TcpStream,
    cut: Arc<AtomicBool>,
}

impl CuttableStream {
    fn is_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }
}

fn connection_cut() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "cut by Fault::Drop")
}

impl AsyncRead for CuttableStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.is_cut() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CuttableStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.is_cut() {
            return Poll::Ready(Err(connection_cut()));
        }
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.is_cut() {
            return Poll::Ready(Err(connection_cut()));
        }
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Handle on the connection a request arrived on.
#[derive(Clone)]
pub(super) struct Connection(Arc<AtomicBool>);

impl Connection {
    pub(super) fn cut(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Connected<IncomingStream<'_, CuttableListener>> for Connection {
    fn connect_info(stream: IncomingStream<'_, CuttableListener>) -> Self {
        Connection(Arc::clone(&stream.io().cut))
    }
}
