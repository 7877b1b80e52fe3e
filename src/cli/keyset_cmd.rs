//! `keyward keyset`: inspect published key sets and build them by hand.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use crate::keyset::{self, Access, KeySetId, Record, Shard};

#[derive(Debug, Subcommand)]
pub(super) enum KeysetCommand {
    /// Print the records of a shard file or key-set directory as JSON lines.
    Inspect {
        /// A shard file, or a directory of shards (plain or a kubelet ConfigMap volume).
        path: PathBuf,
    },
    /// Read JSON-lines records on stdin and write shard files.
    Build {
        /// Key set name (the ApiKeys' `keySet`).
        #[arg(long)]
        name: String,
        /// Namespace the key set belongs to; also the default for records without one.
        #[arg(long, default_value = "default")]
        namespace: String,
        /// Generation written in the headers; defaults to the current Unix time, so it grows.
        #[arg(long)]
        generation: Option<u64>,
        /// The set's gate: `enabled` (none, format v1), `payment-required` (every key answered 402)
        /// or `disabled` (403). See docs/keysets.md.
        #[arg(long, default_value = "enabled", value_parser = parse_access)]
        access: Access,
        /// Largest shard in bytes. A set that needs more than one plain-text shard is gzip-compressed.
        #[arg(long, default_value_t = keyset::DEFAULT_MAX_SHARD_BYTES)]
        max_shard_bytes: usize,
        /// Directory to write into; other shards of the same key set there are removed.
        #[arg(long)]
        out: PathBuf,
    },
}

pub(super) fn run(cmd: KeysetCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KeysetCommand::Inspect { path } => inspect(&path),
        KeysetCommand::Build { name, namespace, generation, access, max_shard_bytes, out } => {
            let id = KeySetId { namespace, name };
            let generation = generation.unwrap_or_else(|| crate::runtime::clock::now().as_second().unsigned_abs());
            let records = read_records(std::io::stdin().lock(), &id.namespace)?;
            let written = build(&id, (generation, access), &records, max_shard_bytes, &out)?;
            let gate = gate_note(access);
            eprintln!("keyset {id} generation {generation}{gate}: {} records in {written} shard(s)", records.len());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn inspect(path: &Path) -> anyhow::Result<ExitCode> {
    let meta = std::fs::metadata(path).with_context(|| path.display().to_string())?;
    let sets = if meta.is_dir() {
        keyset::load_dirs(&[path.to_owned()])?
    } else {
        let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
        let shard: Shard = keyset::decode_shard(&bytes).with_context(|| path.display().to_string())?;
        eprintln!("shard {} of {}", shard.index, shard.total);
        keyset::assemble(vec![Shard { index: 1, total: 1, ..shard }])?
    };
    let mut out = std::io::stdout().lock();
    for set in sets {
        eprintln!(
            "keyset {} generation {}{}: {} records",
            set.id,
            set.generation,
            gate_note(set.access),
            set.records.len()
        );
        for record in &set.records {
            serde_json::to_writer(&mut out, record)?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// One record as people write it by hand: like [`Record`], but `keyId`,
/// `namespace`, `notAfter`, `rateLimit` and a rate limit's `burst` may be left
/// out. Unknown or repeated fields are errors, so a misspelt `notafter` cannot
/// silently produce a key that never expires.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RecordInput {
    hash: crate::token::KeyHash,
    key_id: Option<crate::token::KeyId>,
    namespace: Option<String>,
    name: String,
    scopes: Vec<crate::scope::Scope>,
    not_before: jiff::Timestamp,
    not_after: Option<jiff::Timestamp>,
    state: keyset::RecordState,
    rate_limit: Option<RateLimitInput>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitInput {
    requests: u32,
    period: String,
    burst: Option<u32>,
}

impl RecordInput {
    fn into_record(self, default_namespace: &str) -> Result<Record, &'static str> {
        if self.key_id.is_some_and(|id| id != self.hash.key_id()) {
            return Err("keyId does not match the hash");
        }
        let rate_limit = match self.rate_limit {
            None => None,
            Some(limit) => Some(keyset::RateLimit {
                requests: limit.requests,
                period: limit.period.parse().map_err(|_| "rateLimit.period is not a duration above zero")?,
                burst: limit.burst.unwrap_or(limit.requests),
            }),
        };
        let record = Record {
            hash: self.hash,
            key_id: self.hash.key_id(),
            namespace: self.namespace.unwrap_or_else(|| default_namespace.to_owned()),
            name: self.name,
            scopes: self.scopes,
            not_before: self.not_before,
            not_after: self.not_after,
            state: self.state,
            rate_limit,
        };
        record.validate()?;
        Ok(record)
    }
}

/// Parse JSON-lines records (see [`RecordInput`]); blank lines are skipped.
fn read_records(input: impl BufRead, default_namespace: &str) -> anyhow::Result<Vec<Record>> {
    let mut records = Vec::new();
    for (i, line) in input.lines().enumerate() {
        let number = i + 1;
        let line = line.with_context(|| format!("stdin line {number}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: RecordInput =
            serde_json::from_str(&line).with_context(|| format!("stdin line {number}: not a valid record"))?;
        let record =
            parsed.into_record(default_namespace).map_err(|reason| anyhow::anyhow!("stdin line {number}: {reason}"))?;
        records.push(record);
    }
    Ok(records)
}

/// Write the shards of a key set into `out`, replacing that set's old shards there.
/// ` access <gate>` for a summary line, nothing for an ungated set (whose summary reads as before gates).
fn gate_note(access: Access) -> String {
    if access == Access::Enabled { String::new() } else { format!(" access {access}") }
}

/// `--access`: the gate's header spelling, or `enabled` for none.
fn parse_access(text: &str) -> Result<Access, String> {
    match text {
        "enabled" => Ok(Access::Enabled),
        other => other.parse().map_err(|()| "expected enabled, payment-required or disabled".to_owned()),
    }
}

fn build(
    id: &KeySetId,
    (generation, access): (u64, Access),
    records: &[Record],
    max: usize,
    out: &Path,
) -> anyhow::Result<usize> {
    let shards = keyset::encode_packed_gated(id, generation, access, records, max)?;
    // Never write what readers would refuse: check the output before it replaces anything.
    let decoded = shards.iter().map(|s| keyset::decode_shard(s.as_bytes())).collect::<Result<Vec<_>, _>>()?;
    keyset::assemble(decoded)?;
    std::fs::create_dir_all(out).with_context(|| out.display().to_string())?;
    let own_prefix = format!("{}.", id.name);
    for entry in std::fs::read_dir(out).with_context(|| out.display().to_string())? {
        let path = entry?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.starts_with(&own_prefix) && name.ends_with(keyset::SHARD_FILE_SUFFIX) {
            std::fs::remove_file(&path).with_context(|| path.display().to_string())?;
        }
    }
    for (i, shard) in shards.iter().enumerate() {
        let path = out.join(keyset::shard_file_name(&id.name, i + 1));
        let tmp = out.join(format!(".{}.tmp", keyset::shard_file_name(&id.name, i + 1)));
        std::fs::write(&tmp, shard.as_bytes()).with_context(|| tmp.display().to_string())?;
        std::fs::rename(&tmp, &path).with_context(|| path.display().to_string())?;
    }
    Ok(shards.len())
}
