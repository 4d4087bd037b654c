//! One inbound connection: the handshake (TLS, then the protocol's), then requests until the client
//! closes it, misbehaves, or stays silent too long.

use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{FutureExt, SinkExt, StreamExt};
use raft_core::{Raft, Request, Response, StateMachine};
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_util::codec::{FramedWrite, LengthDelimitedCodec};

use super::ServerCtx;
use crate::frame::{FrameError, FrameReader};
use crate::identity::NodeName;
use crate::tls::certificate_names;
use crate::warn_limit::{BadInput, WarnLimiter};
use crate::wire::{
    self, Hello, HelloReply, RequestFrame, ResponseBody, ResponseFrame, WireError,
    HANDSHAKE_MAX_FRAME_LENGTH, RESPONSE_MAX_FRAME_LENGTH,
};

/// The longest reason a `Failed` response carries, in bytes.
const MAX_FAILURE_REASON: usize = 1024;

type Reader = FrameReader<Box<dyn AsyncRead + Send + Unpin>>;
type Writer = FramedWrite<Box<dyn AsyncWrite + Send + Unpin>, LengthDelimitedCodec>;

/// How a connection ended.
pub(super) enum End {
    /// The client closed it after its requests were answered.
    Closed,
    /// It stayed silent for the idle timeout.
    Idle(Duration),
    /// The socket failed (reset, write error): not the peer's input.
    Broken(String),
    /// Bad input, a refused handshake or a timeout: logged under the limit of its kind.
    Bad { kind: BadInput, reason: String },
}

impl End {
    fn bad(kind: BadInput, reason: impl Into<String>) -> Self {
        End::Bad {
            kind,
            reason: reason.into(),
        }
    }

    pub(super) fn log(self, warnings: &WarnLimiter) {
        match self {
            End::Closed => tracing::debug!("connection closed by the client"),
            End::Idle(after) => tracing::debug!(
                idle_ms = after.as_millis() as u64,
                "closed an idle connection"
            ),
            End::Broken(reason) => tracing::debug!(%reason, "connection broke"),
            End::Bad { kind, reason } => warnings.log(kind, "closed a connection", &reason),
        }
    }
}

/// Serves one accepted connection to its end.
pub(super) async fn serve<SM: StateMachine>(
    stream: TcpStream,
    raft: Raft<SM>,
    ctx: &ServerCtx,
) -> End {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "could not set TCP_NODELAY");
    }
    let limit = ctx.config.handshake_timeout;
    let (reader, writer) = match tokio::time::timeout(limit, handshake(stream, ctx)).await {
        Ok(Ok(halves)) => halves,
        Ok(Err(end)) => return end,
        Err(_) => {
            return End::bad(
                BadInput::Timeout,
                format!("no handshake within {} ms", limit.as_millis()),
            )
        }
    };
    requests(reader, writer, raft, ctx).await
}

/// The TLS handshake (if configured), then the protocol handshake: the client's [`Hello`] is
/// checked and answered. Returns the connection's halves, ready for requests.
async fn handshake(stream: TcpStream, ctx: &ServerCtx) -> Result<(Reader, Writer), End> {
    let (read, write, client_cert): (
        Box<dyn AsyncRead + Send + Unpin>,
        Box<dyn AsyncWrite + Send + Unpin>,
        Option<CertificateDer<'static>>,
    ) = match &ctx.tls {
        Some(acceptor) => {
            let tls = acceptor
                .accept(stream)
                .await
                .map_err(|e| End::bad(BadInput::Tls, format!("TLS handshake failed: {e}")))?;
            let cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|cert| cert.clone().into_owned());
            let (read, write) = tokio::io::split(tls);
            (Box::new(read), Box::new(write), cert)
        }
        None => {
            let (read, write) = stream.into_split();
            (Box::new(read), Box::new(write), None)
        }
    };
    // The whole handshake is bounded by the caller; so is this frame.
    let mut reader = FrameReader::new(
        read,
        HANDSHAKE_MAX_FRAME_LENGTH,
        ctx.config.handshake_timeout,
    );
    let mut writer = FramedWrite::new(write, wire::codec(RESPONSE_MAX_FRAME_LENGTH));
    let frame = match reader.next(None).await {
        Ok(Some(frame)) => frame,
        Ok(None) => return Err(End::bad(BadInput::Handshake, "closed before the handshake")),
        Err(e) => {
            return Err(End::bad(
                BadInput::Handshake,
                format!("bad frame before the handshake: {e}"),
            ))
        }
    };
    let hello = match wire::decode_hello(&frame.payload) {
        // Not our protocol: nothing it could read.
        Err(WireError::BadMagic) => {
            return Err(End::bad(
                BadInput::Handshake,
                "not a raft-net-tcp client (bad magic bytes)",
            ))
        }
        Err(e) => Err(format!("bad handshake: {e}")),
        Ok(hello) => check_hello(&hello, ctx, client_cert.as_ref()).inspect(|()| {
            // Only now is `from` established.
            tracing::Span::current().record("peer", hello.from);
        }),
    };
    let reply = match &hello {
        Ok(()) => HelloReply::Accepted {
            node_id: ctx.node_id,
        },
        Err(reason) => HelloReply::Refused {
            reason: reason.clone(),
        },
    };
    let sent = match wire::encode_hello_reply(&reply) {
        Ok(bytes) => writer.send(bytes).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match (hello, sent) {
        (Ok(()), Ok(())) => {
            tracing::debug!("connection accepted");
            Ok((reader, writer))
        }
        (Ok(()), Err(e)) => Err(End::Broken(format!(
            "sending the handshake answer failed: {e}"
        ))),
        // Whether the refusal reached the client or not, the connection is done.
        (Err(reason), _) => Err(End::bad(
            BadInput::Handshake,
            format!("refused the handshake: {reason}"),
        )),
    }
}

/// Checks a client's handshake; `Err` is the refusal's reason, sent to the client.
///
/// The reason never names this node's cluster id: a stranger must not learn it by guessing wrong.
fn check_hello(
    hello: &Hello,
    ctx: &ServerCtx,
    client_cert: Option<&CertificateDer<'static>>,
) -> Result<(), String> {
    if hello.cluster_id != ctx.cluster_id {
        return Err(format!(
            "cluster id mismatch: this node does not belong to cluster {:?}",
            hello.cluster_id
        ));
    }
    if hello.to != ctx.node_id {
        return Err(format!(
            "wrong node: this is node {}, the client (node {}) expected node {}",
            ctx.node_id, hello.from, hello.to
        ));
    }
    if ctx.tls.is_some() {
        let Some(cert) = client_cert else {
            return Err("no client certificate".into());
        };
        let claimed = NodeName::new(&ctx.cluster_id, hello.from)
            .map_err(|_| "the cluster id cannot name a node".to_string())?;
        if let Err(why) = certificate_names(cert, &claimed) {
            tracing::debug!(claimed = %claimed, %why, "client certificate does not name the claimed node");
            return Err(format!(
                "the client's certificate does not name node {}, the node its handshake claims",
                hello.from
            ));
        }
    }
    Ok(())
}

/// Handles requests until the client closes the connection or something ends it.
async fn requests<SM: StateMachine>(
    mut reader: Reader,
    mut writer: Writer,
    raft: Raft<SM>,
    ctx: &ServerCtx,
) -> End {
    let config = &ctx.config;
    reader.set_max_len(config.max_frame_length);
    reader.set_frame_timeout(config.frame_timeout);
    reader.set_budget(ctx.frame_budget.clone());
    let max_in_flight = config.max_in_flight_per_connection;
    let mut in_flight = FuturesUnordered::new();
    let mut reading = true;
    let mut last_active = Instant::now();
    loop {
        if !reading && in_flight.is_empty() {
            return End::Closed;
        }
        // Idle only while nothing is being handled: then the client is waiting for answers.
        // (A timeout too long to represent is no deadline.)
        let idle_deadline = in_flight
            .is_empty()
            .then(|| last_active.checked_add(config.idle_timeout))
            .flatten();
        tokio::select! {
            done = in_flight.next(), if !in_flight.is_empty() => {
                let Some(first) = done else { continue };
                let written = tokio::time::timeout(
                    config.frame_timeout,
                    write_responses(&mut writer, first, &mut in_flight),
                )
                .await;
                match written {
                    Ok(Ok(())) => last_active = Instant::now(),
                    Ok(Err(e)) => return End::Broken(e),
                    Err(_) => {
                        return End::bad(
                            BadInput::Timeout,
                            format!(
                                "responses not written within {} ms: the client does not read",
                                config.frame_timeout.as_millis()
                            ),
                        )
                    }
                }
            }
            frame = reader.next(idle_deadline), if reading && in_flight.len() < max_in_flight => {
                match frame {
                    // The client is done sending: answer what is in flight, then close.
                    Ok(None) => reading = false,
                    Ok(Some(frame)) => {
                        last_active = Instant::now();
                        match wire::decode::<RequestFrame<SM::Command>>(&frame.payload) {
                            Ok(request) => {
                                in_flight.push(handle(raft.clone(), request, frame.permit))
                            }
                            Err(e) => return End::bad(BadInput::Frame, format!("bad request: {e}")),
                        }
                    }
                    Err(FrameError::Idle) => return End::Idle(config.idle_timeout),
                    Err(e @ FrameError::Stalled(_)) => return End::bad(BadInput::Timeout, e.to_string()),
                    Err(FrameError::Io(e)) => return End::Broken(format!("read failed: {e}")),
                    Err(e) => return End::bad(BadInput::Frame, format!("bad frame: {e}")),
                }
            }
            else => return End::Closed,
        }
    }
}

/// Writes `first` and every other response already done, then flushes once.
async fn write_responses<F>(
    writer: &mut Writer,
    first: ResponseFrame,
    in_flight: &mut FuturesUnordered<F>,
) -> Result<(), String>
where
    F: std::future::Future<Output = ResponseFrame>,
{
    let mut next = Some(first);
    while let Some(response) = next.take() {
        let bytes = wire::encode(&response).map_err(|e| e.to_string())?;
        writer
            .feed(bytes)
            .await
            .map_err(|e| format!("write failed: {e}"))?;
        if let Some(Some(more)) = in_flight.next().now_or_never() {
            next = Some(more);
        }
    }
    SinkExt::<bytes::Bytes>::flush(writer)
        .await
        .map_err(|e| format!("write failed: {e}"))
}

/// Hands one request to the node. `_budget` (the frame's bytes in the server's budget) is held
/// until the answer is ready.
async fn handle<SM: StateMachine>(
    raft: Raft<SM>,
    frame: RequestFrame<SM::Command>,
    _budget: Option<OwnedSemaphorePermit>,
) -> ResponseFrame {
    let answer = match frame.request {
        Request::AppendEntries(r) => raft.append_entries(r).await.map(Response::AppendEntries),
        Request::Vote(r) => raft.vote(r).await.map(Response::Vote),
        Request::PreVote(r) => raft.pre_vote(r).await.map(Response::PreVote),
        Request::TimeoutNow(r) => raft.timeout_now(r).await.map(Response::TimeoutNow),
        Request::InstallSnapshot(r) => raft
            .install_snapshot(r)
            .await
            .map(Response::InstallSnapshot),
        Request::ReadIndex(r) => raft.read_index_request(r).await.map(Response::ReadIndex),
    };
    let body = match answer {
        Ok(response) => ResponseBody::Ok(response),
        Err(e) => ResponseBody::Failed {
            reason: truncated(e.to_string(), MAX_FAILURE_REASON),
        },
    };
    ResponseFrame { id: frame.id, body }
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn truncated(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::truncated;

    #[test]
    fn failure_reasons_are_cut_at_a_character_boundary() {
        assert_eq!(truncated("short".into(), 10), "short");
        assert_eq!(truncated("abcdef".into(), 3), "abc");
        // 'é' is two bytes: cutting at 2 would split it.
        assert_eq!(truncated("aé".into(), 2), "a");
    }
}
