//! Read-ahead under TLS: one `recv` for a whole request instead of one per 4 KiB.
//!
//! rustls asks its transport for at most 4 KiB at a time, so a 10 KB AdmissionReview cost
//! three `recvfrom` calls (seen with `strace -c`). Here each read from the socket asks for
//! up to [`CHUNK`] into a scratch buffer on the stack, hands the caller its share and keeps
//! only the rest, in a buffer of exactly that size, for the caller's next reads. A waiting
//! or idle connection holds no read-ahead memory.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most read from the socket at once: two full TLS records (16 KiB of plaintext plus
/// header and tag each) fit.
pub const CHUNK: usize = 32 * 1024;

/// A transport whose reads go through read-ahead; writes pass straight through.
#[derive(Debug)]
pub struct ReadAhead<S> {
    inner: S,
    /// Read from the socket, not yet handed on; empty (and unallocated) most of the time.
    ahead: BytesMut,
}

impl<S> ReadAhead<S> {
    pub fn new(inner: S) -> Self {
        ReadAhead {
            inner,
            ahead: BytesMut::new(),
        }
    }

    /// Bytes read from the socket and not yet handed on.
    #[cfg(test)]
    pub fn buffered(&self) -> usize {
        self.ahead.len()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.ahead.is_empty() {
            let n = this.ahead.len().min(out.remaining());
            out.put_slice(this.ahead.split_at(n).0);
            this.ahead.advance(n);
            if this.ahead.is_empty() {
                this.ahead = BytesMut::new();
            }
            return Poll::Ready(Ok(()));
        }
        // Nothing to gain from a copy when the caller takes as much, or nothing.
        if out.remaining() >= CHUNK || out.remaining() == 0 {
            return Pin::new(&mut this.inner).poll_read(cx, out);
        }
        let mut scratch = [MaybeUninit::<u8>::uninit(); CHUNK];
        let mut read = ReadBuf::uninit(&mut scratch);
        ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
        let got = read.filled();
        let (now, later) = got.split_at(got.len().min(out.remaining()));
        out.put_slice(now);
        if !later.is_empty() {
            this.ahead = BytesMut::from(later);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use tokio::io::AsyncReadExt;

    use super::*;

    /// A socket that delivers the given chunks, one per read, and counts the reads.
    struct Chunks {
        chunks: VecDeque<io::Result<Vec<u8>>>,
        reads: usize,
        largest_ask: usize,
    }

    fn socket(chunks: Vec<io::Result<Vec<u8>>>) -> Chunks {
        Chunks {
            chunks: chunks.into(),
            reads: 0,
            largest_ask: 0,
        }
    }

    impl AsyncRead for Chunks {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            out: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            this.reads += 1;
            this.largest_ask = this.largest_ask.max(out.remaining());
            match this.chunks.pop_front() {
                None => Poll::Ready(Ok(())),
                Some(Err(e)) => Poll::Ready(Err(e)),
                Some(Ok(mut chunk)) => {
                    let n = chunk.len().min(out.remaining());
                    out.put_slice(&chunk[..n]);
                    if n < chunk.len() {
                        this.chunks.push_front(Ok(chunk.split_off(n)));
                    }
                    Poll::Ready(Ok(()))
                }
            }
        }
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    /// Reads to the end the way rustls does: at most 4 KiB a call.
    async fn read_like_rustls<S: AsyncRead + Unpin>(s: &mut S) -> io::Result<Vec<u8>> {
        let mut all = Vec::new();
        let mut piece = [0u8; 4096];
        loop {
            let n = s.read(&mut piece).await?;
            if n == 0 {
                return Ok(all);
            }
            all.extend_from_slice(&piece[..n]);
        }
    }

    #[tokio::test]
    async fn a_ten_kilobyte_request_is_one_socket_read() {
        let body = pattern(10_100);
        let mut s = ReadAhead::new(socket(vec![Ok(body.clone())]));
        let mut first = [0u8; 4096];
        assert_eq!(s.read(&mut first).await.unwrap(), 4096);
        assert_eq!(s.buffered(), 10_100 - 4096);
        let rest = read_like_rustls(&mut s).await.unwrap();
        assert_eq!([&first[..], &rest[..]].concat(), body);
        // One read for the data, one for the end of stream.
        assert_eq!(s.inner.reads, 2);
        assert_eq!(s.inner.largest_ask, CHUNK);
        assert_eq!(s.buffered(), 0);
    }

    #[tokio::test]
    async fn more_than_a_chunk_arrives_whole_and_in_order() {
        let body = pattern(3 * CHUNK + 17);
        let pieces = body.chunks(5000).map(|c| Ok(c.to_vec())).collect();
        let mut s = ReadAhead::new(socket(pieces));
        assert_eq!(read_like_rustls(&mut s).await.unwrap(), body);
    }

    #[tokio::test]
    async fn a_caller_asking_for_a_chunk_or_more_reads_directly() {
        let body = pattern(CHUNK + 10);
        let mut s = ReadAhead::new(socket(vec![Ok(body.clone())]));
        let mut big = vec![0u8; 2 * CHUNK];
        let n = s.read(&mut big).await.unwrap();
        assert_eq!(&big[..n], &body[..]);
        assert_eq!(s.buffered(), 0);
        assert_eq!(s.inner.largest_ask, 2 * CHUNK);
    }

    #[tokio::test]
    async fn errors_and_end_of_stream_pass_through() {
        let mut s = ReadAhead::new(socket(vec![
            Ok(b"abc".to_vec()),
            Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset")),
        ]));
        let mut piece = [0u8; 4096];
        assert_eq!(s.read(&mut piece).await.unwrap(), 3);
        let e = s.read(&mut piece).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
        assert_eq!(s.read(&mut piece).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn writes_reach_the_socket_unchanged() {
        use tokio::io::AsyncWriteExt;
        let (near, mut far) = tokio::io::duplex(64);
        let mut s = ReadAhead::new(near);
        s.write_all(b"allowed").await.unwrap();
        s.flush().await.unwrap();
        let mut got = [0u8; 7];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"allowed");
        far.write_all(b"review").await.unwrap();
        let mut back = [0u8; 6];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"review");
    }
}
