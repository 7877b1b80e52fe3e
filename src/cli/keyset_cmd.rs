//! `keyward keyset`: inspect published key sets and build them by hand.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;

use crate::keyset::{self, KeySetId, Record, Shard};

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
        KeysetCommand::Build { name, namespace, generation, max_shard_bytes, out } => {
            let id = KeySetId { namespace, name };
            let generation = generation.unwrap_or_else(|| jiff::Timestamp::now().as_second().unsigned_abs());
            let records = read_records(std::io::stdin().lock(), &id.namespace)?;
            let written = build(&id, generation, &records, max_shard_bytes, &out)?;
            eprintln!("keyset {id} generation {generation}: {} records in {written} shard(s)", records.len());
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
        eprintln!("keyset {} generation {}: {} records", set.id, set.generation, set.records.len());
        for record in &set.records {
            serde_json::to_writer(&mut out, record)?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Parse JSON-lines records. `keyId` may be left out (it is derived from the
/// hash) and `namespace` defaults to `default_namespace`.
fn read_records(input: impl BufRead, default_namespace: &str) -> anyhow::Result<Vec<Record>> {
    let mut records = Vec::new();
    for (i, line) in input.lines().enumerate() {
        let number = i + 1;
        let line = line.with_context(|| format!("stdin line {number}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let mut value: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("stdin line {number}: not JSON"))?;
        let Some(object) = value.as_object_mut() else {
            bail!("stdin line {number}: expected a JSON object");
        };
        object.entry("namespace").or_insert_with(|| default_namespace.into());
        object.entry("notAfter").or_insert(serde_json::Value::Null);
        object.entry("rateLimit").or_insert(serde_json::Value::Null);
        let derived_key_id = object
            .get("hash")
            .and_then(|h| h.as_str())
            .and_then(|h| h.parse::<crate::token::KeyHash>().ok())
            .map(|hash| hash.key_id().to_string());
        if let Some(key_id) = derived_key_id {
            object.entry("keyId").or_insert_with(|| key_id.into());
        }
        if let Some(limit) = object.get_mut("rateLimit").and_then(|l| l.as_object_mut())
            && !limit.contains_key("burst")
        {
            let requests = limit.get("requests").cloned().unwrap_or_default();
            limit.insert("burst".into(), requests);
        }
        let record: Record =
            serde_json::from_value(value).with_context(|| format!("stdin line {number}: not a valid record"))?;
        record.validate().map_err(|reason| anyhow::anyhow!("stdin line {number}: {reason}"))?;
        records.push(record);
    }
    Ok(records)
}

/// Write the shards of a key set into `out`, replacing that set's old shards there.
fn build(id: &KeySetId, generation: u64, records: &[Record], max: usize, out: &Path) -> anyhow::Result<usize> {
    let shards = keyset::encode_packed(id, generation, records, max)?;
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
