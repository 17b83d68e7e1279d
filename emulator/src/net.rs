//! The TCP side: the accept loop, one hyper HTTP/1.1 connection per socket, and the abortive
//! close (TCP RST, no answer) an injected `reset` fault asks for.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::server::{Answer, App};

/// The error the hyper service returns to drop a connection without answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InjectedReset;

impl fmt::Display for InjectedReset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection reset (injected fault)")
    }
}

impl StdError for InjectedReset {}

/// Marks a connection to be closed abortively.
#[derive(Clone, Debug, Default)]
pub struct AbortHandle(Arc<AtomicBool>);

impl AbortHandle {
    pub fn abort(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_aborted(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// A TCP stream that, once its [`AbortHandle`] is triggered, is closed with a RST (`SO_LINGER`
/// 0) instead of a FIN, and is not shut down gracefully first, so the peer sees a connection
/// reset rather than an answer or a clean end of stream.
#[derive(Debug)]
pub struct AbortableStream {
    stream: TcpStream,
    abort: AbortHandle,
}

impl AbortableStream {
    pub fn new(stream: TcpStream) -> (Self, AbortHandle) {
        let abort = AbortHandle::default();
        (
            AbortableStream {
                stream,
                abort: abort.clone(),
            },
            abort,
        )
    }
}

impl Drop for AbortableStream {
    fn drop(&mut self) {
        if self.abort.is_aborted() {
            // Zero linger makes the close below (dropping the stream) send a RST; it does not
            // block. If it cannot be set the peer sees a plain close, which is still no answer.
            let _ = self.stream.set_zero_linger();
        }
    }
}

impl AsyncRead for AbortableStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for AbortableStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.abort.is_aborted() {
            // No FIN: the drop sends the RST.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_shutdown(cx)
    }
}

/// True when a connection ended because a `reset` fault was injected.
fn is_injected_reset(e: &hyper::Error) -> bool {
    e.source()
        .is_some_and(|s| s.downcast_ref::<InjectedReset>().is_some())
}

/// Accepts connections forever, serving HTTP/1.1 with keep-alive and `TCP_NODELAY`.
///
/// Each request is handled in its own task, so a client that hangs up while its request waits
/// (an injected delay) does not cancel it: it is still processed and recorded, as a real server
/// would. An [`Answer::Reset`] closes the connection with a RST and no answer.
pub async fn serve(listener: TcpListener, app: Arc<App>) {
    loop {
        let (stream, _peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                eprintln!("healthlake-emulator: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            eprintln!("healthlake-emulator: could not set TCP_NODELAY: {e}");
        }
        let (stream, abort) = AbortableStream::new(stream);
        let app = Arc::clone(&app);
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let app = Arc::clone(&app);
                let abort = abort.clone();
                async move {
                    let answer =
                        match tokio::spawn(async move { app.handle_hyper(req).await }).await {
                            Ok(answer) => answer,
                            Err(e) => Answer::Respond(App::internal_error(&format!(
                                "the request handler failed: {e}"
                            ))),
                        };
                    match answer {
                        Answer::Respond(resp) => Ok(resp),
                        Answer::Reset => {
                            abort.abort();
                            Err(InjectedReset)
                        }
                    }
                }
            });
            let conn = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                if !e.is_incomplete_message() && !is_injected_reset(&e) {
                    eprintln!("healthlake-emulator: connection error: {e}");
                }
            }
        });
    }
}
