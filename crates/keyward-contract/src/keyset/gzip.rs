//! The gzip layer, as bytes only: compress shard text, and inflate stored bytes with a bound.
//!
//! Knows nothing of the text inside; readers detect gzip by its magic bytes.

use std::io::{Read, Write};

use flate2::Compression;
use flate2::bufread::GzDecoder;
use flate2::write::GzEncoder;

use super::format::MAX_TEXT_BYTES;

/// The first two bytes of every gzip stream.
pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

pub(super) fn gzip(text: &str) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(text.len() / 3), Compression::default());
    // Writing into a Vec cannot fail.
    encoder.write_all(text.as_bytes()).expect("writing to memory");
    encoder.finish().expect("writing to memory")
}

/// Why stored bytes could not be turned back into text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum UnpackError {
    /// The gzip stream is corrupt or truncated.
    Corrupt,
    /// The text inside is larger than [`MAX_TEXT_BYTES`].
    TooLarge,
}

/// The text of a stored shard: gzip streams are inflated (bounded), anything else is returned as is.
pub(super) fn unpack(bytes: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, UnpackError> {
    if !bytes.starts_with(&GZIP_MAGIC) {
        return Ok(std::borrow::Cow::Borrowed(bytes));
    }
    let mut text = Vec::with_capacity(bytes.len() * 4);
    let limit = u64::try_from(MAX_TEXT_BYTES).unwrap_or(u64::MAX) + 1;
    let mut decoder = GzDecoder::new(bytes);
    (&mut decoder).take(limit).read_to_end(&mut text).map_err(|_| UnpackError::Corrupt)?;
    if text.len() > MAX_TEXT_BYTES {
        return Err(UnpackError::TooLarge);
    }
    // One gzip member and nothing after it: appended bytes would be ignored by
    // the decoder, so a shard carrying them is not what its writer wrote.
    if !decoder.into_inner().is_empty() {
        return Err(UnpackError::Corrupt);
    }
    Ok(std::borrow::Cow::Owned(text))
}
