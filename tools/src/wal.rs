//! `quasarctl wal check|dump`: offline inspection of one shard's write-ahead log directory.
//!
//! Reads the segment files (never maps or writes them, so it is safe next to a stopped node
//! and on a copy) and runs the WAL's own parser and recovery table (`quasar_wal::record`,
//! `quasar_wal::recovery`): the verdict printed here is the one the node would reach when
//! opening the directory, without truncating anything.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use quasar_wal::record::{self, RecordKind, RecordView};
use quasar_wal::recovery::{self, End};
use quasar_wal::SegmentId;
use serde_json::json;

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// `quasarctl wal ...`
#[derive(Subcommand, Debug)]
pub enum WalCommand {
    /// Verify every record of a WAL directory and print the recovery verdict.
    Check(CheckArgs),
    /// Print the records of a WAL directory, one line each.
    Dump(DumpArgs),
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The WAL directory of one shard (holding `*.wal` segment files).
    #[arg(long)]
    pub dir: PathBuf,
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Output,
}

#[derive(Args, Debug)]
pub struct DumpArgs {
    /// The WAL directory of one shard (holding `*.wal` segment files).
    #[arg(long)]
    pub dir: PathBuf,
    /// Only records of this group.
    #[arg(long)]
    pub group: Option<u64>,
    /// Stop after this many records.
    #[arg(long, default_value_t = 1000)]
    pub limit: usize,
}

/// What `check` found: the exit status tells scripts (0 sound, 1 damaged).
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every durable record verifies (a torn tail is a normal crash artefact).
    Sound,
    /// Durable data is damaged or a segment is missing: the node will refuse to start.
    Damaged,
}

/// Reads every segment file of `dir`, in id order, checking that ids are contiguous.
fn read_segments(dir: &Path) -> anyhow::Result<Vec<(SegmentId, Vec<u8>)>> {
    let mut ids = Vec::new();
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        if let Some(id) = entry
            .file_name()
            .to_str()
            .and_then(SegmentId::from_file_name)
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    if ids.is_empty() {
        anyhow::bail!(
            "no WAL segment files (like 0000000000000001.wal) in {}: is this a shard's WAL directory?",
            dir.display()
        );
    }
    let mut segments = Vec::with_capacity(ids.len());
    for id in ids {
        let path = dir.join(id.file_name());
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        segments.push((id, bytes));
    }
    Ok(segments)
}

/// The first gap in the segment ids, if any (the WAL refuses such a directory).
fn missing_segment(segments: &[(SegmentId, Vec<u8>)]) -> Option<SegmentId> {
    segments
        .windows(2)
        .find(|w| w[1].0 .0 != w[0].0 .0 + 1)
        .map(|w| w[0].0.next())
}

fn describe(r: &RecordView<'_>) -> String {
    match r.kind {
        RecordKind::Entries => {
            let (first, count) = record::entries_header(r.body);
            let last = first.0 + u64::from(count).saturating_sub(1);
            format!("entries {}..={} ({count})", first.0, last)
        }
        RecordKind::HardState => {
            let hs = record::hard_state_of(r.body);
            format!(
                "hard-state term {} vote {} commit {}",
                hs.term.0, hs.vote, hs.commit.0
            )
        }
        RecordKind::TruncateSuffix => {
            format!("truncate-suffix from {}", record::fixed_field(r.body, 0))
        }
        RecordKind::Compact => format!(
            "compact below {} (term {})",
            record::fixed_field(r.body, 0),
            record::fixed_field(r.body, 1)
        ),
        RecordKind::SnapshotMark => format!(
            "snapshot-mark at {} (term {})",
            record::fixed_field(r.body, 0),
            record::fixed_field(r.body, 1)
        ),
        RecordKind::SyncMark => format!(
            "sync-mark durable-through {}",
            record::fixed_field(r.body, 0)
        ),
        RecordKind::Seal => "seal".to_owned(),
        RecordKind::SegmentHeader => "segment-header".to_owned(),
    }
}

/// `quasarctl wal check`.
pub fn check(args: &CheckArgs) -> anyhow::Result<Verdict> {
    let segments = read_segments(&args.dir)?;
    let total_bytes: usize = segments.iter().map(|(_, b)| b.len()).sum();
    if let Some(id) = missing_segment(&segments) {
        let reason = format!("segment {id} is missing between existing segments");
        print_check(
            args.output,
            &args.dir,
            segments.len(),
            total_bytes,
            None,
            Err(reason),
        );
        return Ok(Verdict::Damaged);
    }
    let views: Vec<(SegmentId, &[u8])> =
        segments.iter().map(|(id, b)| (*id, b.as_slice())).collect();
    let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
    let mut groups = std::collections::HashSet::new();
    let outcome = recovery::scan(&views, |_, r| {
        *kinds.entry(format!("{:?}", r.kind)).or_default() += 1;
        if matches!(r.kind, RecordKind::Entries | RecordKind::HardState) {
            groups.insert(r.group);
        }
    });
    let summary = Summary {
        kinds,
        groups: groups.len(),
    };
    match outcome {
        Ok(outcome) => {
            let end = match outcome.end {
                End::Open {
                    segment, offset, ..
                } => format!("{segment} at offset {offset}"),
                End::NewSegment { id } => format!("a new segment {id}"),
            };
            let torn = outcome.torn.map(|t| {
                format!(
                    "torn tail at {} offset {} ({}): a crash artefact, truncated on open",
                    t.segment, t.offset, t.reason
                )
            });
            let report = Report {
                end,
                torn,
                synced: outcome.synced_lsn.to_string(),
                discard: outcome.discard.len(),
            };
            print_check(
                args.output,
                &args.dir,
                segments.len(),
                total_bytes,
                Some(&summary),
                Ok(report),
            );
            Ok(Verdict::Sound)
        }
        Err(c) => {
            let reason = format!(
                "corruption in {} at offset {}: {} (a later sync mark proves it was durable at {}); \
                 restore this shard from a replica",
                args.dir.join(c.segment.file_name()).display(),
                c.offset,
                c.reason,
                c.proof
            );
            print_check(
                args.output,
                &args.dir,
                segments.len(),
                total_bytes,
                Some(&summary),
                Err(reason),
            );
            Ok(Verdict::Damaged)
        }
    }
}

struct Summary {
    kinds: BTreeMap<String, u64>,
    groups: usize,
}

struct Report {
    end: String,
    torn: Option<String>,
    synced: String,
    discard: usize,
}

fn print_check(
    output: Output,
    dir: &Path,
    segments: usize,
    bytes: usize,
    summary: Option<&Summary>,
    result: Result<Report, String>,
) {
    match output {
        Output::Json => {
            let mut doc = json!({
                "dir": dir.display().to_string(),
                "segments": segments,
                "bytes": bytes,
                "sound": result.is_ok(),
            });
            if let Some(s) = summary {
                doc["records"] = json!(s.kinds);
                doc["groups"] = json!(s.groups);
            }
            match result {
                Ok(r) => {
                    doc["appends_continue_at"] = json!(r.end);
                    doc["durable_through"] = json!(r.synced);
                    doc["torn_tail"] = json!(r.torn);
                    doc["segments_discarded_on_open"] = json!(r.discard);
                }
                Err(reason) => doc["error"] = json!(reason),
            }
            println!("{doc}");
        }
        Output::Table => {
            println!("directory      {}", dir.display());
            println!("segments       {segments} ({bytes} bytes)");
            if let Some(s) = summary {
                println!("groups         {}", s.groups);
                for (kind, count) in &s.kinds {
                    println!("records        {kind:<14} {count}");
                }
            }
            match result {
                Ok(r) => {
                    println!("durable        through {}", r.synced);
                    println!("appends        continue in {}", r.end);
                    if let Some(torn) = r.torn {
                        println!("note           {torn}");
                    }
                    if r.discard > 0 {
                        println!("note           {} later segment(s) never became durable and are discarded on open", r.discard);
                    }
                    println!("verdict        sound");
                }
                Err(reason) => {
                    println!("verdict        DAMAGED: {reason}");
                }
            }
        }
    }
}

/// `quasarctl wal dump`: one line per record, in log order, up to the recovery end.
pub fn dump(args: &DumpArgs) -> anyhow::Result<Verdict> {
    let segments = read_segments(&args.dir)?;
    if let Some(id) = missing_segment(&segments) {
        anyhow::bail!(
            "segment {id} is missing between existing segments in {}",
            args.dir.display()
        );
    }
    let views: Vec<(SegmentId, &[u8])> =
        segments.iter().map(|(id, b)| (*id, b.as_slice())).collect();
    let mut printed = 0usize;
    let outcome = recovery::scan(&views, |segment, r| {
        if printed >= args.limit || args.group.is_some_and(|g| g != r.group.0) {
            return;
        }
        printed += 1;
        println!(
            "{segment} {:>10} group {:>8} {}",
            r.offset,
            r.group.0,
            describe(r)
        );
    });
    if printed >= args.limit {
        println!("... stopped after --limit {} records", args.limit);
    }
    match outcome {
        Ok(_) => Ok(Verdict::Sound),
        Err(c) => {
            eprintln!(
                "corruption in {} at offset {}: {}",
                c.segment, c.offset, c.reason
            );
            Ok(Verdict::Damaged)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quasar_wal::{Batch, GroupId, HardState, LogIndex, Term, Wal, WalConfig};

    /// A small real WAL over two 1 MiB segments: groups 1 and 2 with small entries and
    /// group 3 with 64 KiB ones (so that the log rolls into its second segment: a segment
    /// prepared ahead may still be waiting for a spare when the log closes), each batch
    /// synced before the next is written (so later sync marks prove earlier batches
    /// durable).
    fn write_wal(dir: &Path) {
        let config = WalConfig {
            segment_size_bytes: 1 << 20,
            ..WalConfig::default()
        };
        let mut wal = Wal::open_dir(dir, config).unwrap();
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(256 << 10)
            .make()
            .unwrap()
            .run(async move {
                let big = vec![7u8; 64 << 10];
                for i in 1..=20u64 {
                    let mut batch = Batch::with_capacity(4);
                    let commit = HardState {
                        term: Term(1),
                        vote: 1,
                        commit: LogIndex(i),
                    };
                    batch
                        .entries(GroupId(1), LogIndex(i), [(Term(1), &b"put a=1"[..])])
                        .entries(GroupId(2), LogIndex(i), [(Term(1), &b"put b=2"[..])])
                        .entries(GroupId(3), LogIndex(i), [(Term(1), &big[..])])
                        .hard_state(GroupId(1), commit);
                    wal.append(&batch).unwrap();
                    wal.sync().await.unwrap();
                }
            });
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "wal"))
            .collect();
        files.sort();
        files
    }

    #[test]
    fn a_sound_log_is_sound_and_dump_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        write_wal(dir.path());
        let args = CheckArgs {
            dir: dir.path().into(),
            output: Output::Json,
        };
        assert_eq!(check(&args).unwrap(), Verdict::Sound);
        let dump = DumpArgs {
            dir: dir.path().into(),
            group: Some(2),
            limit: 5,
        };
        assert_eq!(super::dump(&dump).unwrap(), Verdict::Sound);
    }

    #[test]
    fn corruption_before_durable_data_is_damaged() {
        let dir = tempfile::tempdir().unwrap();
        write_wal(dir.path());
        let first = segment_files(dir.path())[0].clone();
        let mut bytes = std::fs::read(&first).unwrap();
        // Flip a bit early in the data: later batches' sync marks prove it was durable.
        bytes[200] ^= 0x04;
        std::fs::write(&first, bytes).unwrap();
        let args = CheckArgs {
            dir: dir.path().into(),
            output: Output::Table,
        };
        assert_eq!(check(&args).unwrap(), Verdict::Damaged);
    }

    #[test]
    fn a_missing_segment_is_damaged() {
        let dir = tempfile::tempdir().unwrap();
        write_wal(dir.path());
        let files = segment_files(dir.path());
        assert!(
            files.len() >= 2,
            "the log rolled into a second segment: {files:?}"
        );
        // Move the second segment (it holds data) to a later id, leaving a gap.
        let second =
            SegmentId::from_file_name(files[1].file_name().unwrap().to_str().unwrap()).unwrap();
        let gap_after = dir.path().join(SegmentId(second.0 + 5).file_name());
        std::fs::rename(&files[1], gap_after).unwrap();
        let args = CheckArgs {
            dir: dir.path().into(),
            output: Output::Json,
        };
        assert_eq!(check(&args).unwrap(), Verdict::Damaged);
    }

    #[test]
    fn a_directory_without_segments_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let args = CheckArgs {
            dir: dir.path().into(),
            output: Output::Table,
        };
        let err = check(&args).unwrap_err().to_string();
        assert!(err.contains("no WAL segment files"), "{err}");
    }

    #[test]
    fn a_directory_that_cannot_be_read_is_an_error() {
        let args = CheckArgs {
            dir: "/nonexistent/quasar-wal".into(),
            output: Output::Table,
        };
        let err = check(&args).unwrap_err().to_string();
        assert!(err.contains("cannot list /nonexistent/quasar-wal"), "{err}");
    }
}
