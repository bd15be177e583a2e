//! perfcopy: the reply to a query as raw TDS token-stream bytes (see `PERFCOPY.md`).

use bytes::BytesMut;
use futures_util::io::{AsyncRead, AsyncWrite};
use futures_util::stream::TryStreamExt;

use crate::client::Connection;
use crate::error::{Error, IoErrorKind};

/// The reply to [`Client::query_raw`]: the payloads of the server's reply packets in order,
/// for a caller that decodes the token stream (MS-TDS 2.2.7) itself, straight into its own
/// buffers. Reading stops after the packet marked end-of-message. Dropping a reply early is
/// safe: the next request on the client discards the rest of it first, as for a
/// [`QueryStream`].
///
/// [`Client::query_raw`]: crate::Client::query_raw
/// [`QueryStream`]: crate::QueryStream
pub struct RawReply<'a, S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    connection: &'a mut Connection<S>,
    done: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> std::fmt::Debug for RawReply<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawReply").field("done", &self.done).finish()
    }
}

impl<'a, S: AsyncRead + AsyncWrite + Unpin + Send> RawReply<'a, S> {
    pub(crate) fn new(connection: &'a mut Connection<S>) -> Self {
        RawReply { connection, done: false }
    }

    /// The payload of the next reply packet, or `None` after the last one.
    ///
    /// # Errors
    ///
    /// An I/O error when the connection fails or closes before the end of the reply.
    pub async fn next_payload(&mut self) -> crate::Result<Option<BytesMut>> {
        if self.done {
            return Ok(None);
        }
        match self.connection.try_next().await? {
            Some(packet) => {
                self.done = packet.is_last();
                let (_, payload) = packet.into_parts();
                Ok(Some(payload))
            }
            None => {
                self.done = true;
                Err(Error::Io { kind: IoErrorKind::UnexpectedEof, message: "connection closed before the end of the reply".into() })
            }
        }
    }
}
