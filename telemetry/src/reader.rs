//! The agent's side: reads every shim's file from where it stopped, and removes a file once its
//! shim has exited and all of it was read.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::process_identity::ProcessIdentity;
use crate::record::CreateRecord;

/// What one [`RecordReader::poll`] found.
#[derive(Debug, Default)]
pub struct Batch {
    pub records: Vec<CreateRecord>,
    /// Lines that were not records (torn by a crash or a full disk, or garbage): skipped.
    pub skipped: u64,
    /// Files removed because their shim is gone and every line was read.
    pub removed: Vec<PathBuf>,
}

/// Where reading a file stopped. A different inode, or a file shorter than the offset, is a
/// file someone removed or truncated and a shim wrote anew: read from its start.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    inode: u64,
    offset: u64,
}

pub struct RecordReader {
    dir: PathBuf,
    proc_root: PathBuf,
    cursors: HashMap<OsString, Cursor>,
}

impl RecordReader {
    /// Reads the files below `dir`; shims are looked up below `proc_root` (normally `/proc`).
    pub fn new(dir: PathBuf, proc_root: PathBuf) -> RecordReader {
        RecordReader {
            dir,
            proc_root,
            cursors: HashMap::new(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Everything appended since the last poll. A missing directory is no record yet.
    pub fn poll(&mut self) -> std::io::Result<Batch> {
        let mut batch = Batch::default();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(batch),
            Err(error) => return Err(error),
        };
        let mut seen = Vec::new();
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let Some(writer) = name.to_str().and_then(ProcessIdentity::from_file_name) else {
                continue;
            };
            seen.push(name.clone());
            if let Err(error) = self.read_file(&entry.path(), &name, writer, &mut batch) {
                tracing::warn!(file = %entry.path().display(), %error, "cannot read telemetry file");
            }
        }
        self.cursors.retain(|name, _| seen.contains(name));
        Ok(batch)
    }

    fn read_file(
        &mut self,
        path: &Path,
        name: &OsString,
        writer: ProcessIdentity,
        batch: &mut Batch,
    ) -> std::io::Result<()> {
        // Asked before reading: a shim that is gone now cannot append after the read below, so
        // the file can then be removed without losing a line.
        let writer_gone = !writer.is_alive(&self.proc_root);
        let mut file = std::fs::File::open(path)?;
        let inode = file.metadata()?.ino();
        let cursor = match self.cursors.get(name) {
            Some(cursor) if cursor.inode == inode && cursor.offset <= file.metadata()?.len() => {
                *cursor
            }
            _ => Cursor { inode, offset: 0 },
        };
        file.seek(SeekFrom::Start(cursor.offset))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let complete = bytes
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |at| at + 1);
        for line in bytes[..complete].split(|b| *b == b'\n') {
            if line.is_empty() {
                continue;
            }
            match std::str::from_utf8(line)
                .map_err(|error| error.to_string())
                .and_then(|text| CreateRecord::parse_line(text).map_err(|e| e.to_string()))
            {
                Ok(record) => batch.records.push(record),
                Err(error) => {
                    tracing::warn!(file = %path.display(), %error, "skipping a telemetry line that is not a record");
                    batch.skipped += 1;
                }
            }
        }
        let offset = cursor.offset + complete as u64;
        let tail = bytes.len() - complete;
        if writer_gone {
            if tail > 0 {
                // The shim died (or the disk filled) mid-line; nothing will complete it.
                tracing::warn!(file = %path.display(), bytes = tail, "skipping a torn telemetry line");
                batch.skipped += 1;
            }
            std::fs::remove_file(path)?;
            self.cursors.remove(name);
            batch.removed.push(path.to_path_buf());
        } else {
            self.cursors.insert(name.clone(), Cursor { inode, offset });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::record::{Outcome, VERSION};
    use crate::writer::append_record;

    fn record(container: &str) -> CreateRecord {
        CreateRecord {
            version: VERSION,
            at: 1,
            container: container.into(),
            container_name: None,
            pod_namespace: None,
            pod_name: None,
            pod_uid: None,
            reference: Some("acme/web".into()),
            environment: Some("acme/web:1".into()),
            outcome: Outcome::Rewritten,
            phase: None,
            message: None,
            resolved: Some(true),
            duration_ms: 5,
            fetch: None,
        }
    }

    fn containers(batch: &Batch) -> Vec<&str> {
        batch.records.iter().map(|r| r.container.as_str()).collect()
    }

    /// A file written by a process that is surely gone (pid 1 started at boot, not at tick 1).
    fn dead_writer_file(dir: &Path) -> PathBuf {
        dir.join(
            ProcessIdentity {
                pid: 1,
                start_ticks: u64::MAX,
            }
            .file_name(),
        )
    }

    #[test]
    fn reads_each_line_once_and_keeps_a_live_writers_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut reader = RecordReader::new(dir.path().into(), "/proc".into());
        assert!(reader.poll().unwrap().records.is_empty());

        let file = append_record(dir.path(), &record("a")).unwrap();
        append_record(dir.path(), &record("b")).unwrap();
        assert_eq!(containers(&reader.poll().unwrap()), ["a", "b"]);
        assert!(reader.poll().unwrap().records.is_empty(), "read twice");
        append_record(dir.path(), &record("c")).unwrap();
        let batch = reader.poll().unwrap();
        assert_eq!(containers(&batch), ["c"]);
        assert!(
            batch.removed.is_empty() && file.exists(),
            "this process still runs"
        );
    }

    #[test]
    fn a_late_reader_counts_what_was_written_before_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let file = dead_writer_file(dir.path());
        std::fs::write(&file, record("a").to_line() + &record("b").to_line()).unwrap();
        let batch = RecordReader::new(dir.path().into(), "/proc".into())
            .poll()
            .unwrap();
        assert_eq!(containers(&batch), ["a", "b"]);
        assert_eq!(
            batch.removed,
            std::slice::from_ref(&file),
            "the writer is gone: consumed"
        );
        assert!(!file.exists());
    }

    #[test]
    fn garbage_and_torn_lines_are_skipped_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let file = dead_writer_file(dir.path());
        let mut text = record("a").to_line();
        text.push_str("not json at all\n");
        text.push_str(&record("b").to_line().replace("\"v\":1", "\"v\":9"));
        text.push_str(&record("c").to_line());
        text.push_str(&record("torn").to_line()[..20]);
        std::fs::write(&file, text).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not ours\n").unwrap();
        let batch = RecordReader::new(dir.path().into(), "/proc".into())
            .poll()
            .unwrap();
        assert_eq!(containers(&batch), ["a", "c"]);
        assert_eq!(batch.skipped, 3);
        assert!(
            dir.path().join("notes.txt").exists(),
            "other files are left alone"
        );
    }

    #[test]
    fn a_partial_line_of_a_live_writer_waits_for_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut reader = RecordReader::new(dir.path().into(), "/proc".into());
        let file = append_record(dir.path(), &record("a")).unwrap();
        let line = record("b").to_line();
        let (head, rest) = line.split_at(10);
        let mut handle = std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .unwrap();
        handle.write_all(head.as_bytes()).unwrap();
        let batch = reader.poll().unwrap();
        assert_eq!((containers(&batch), batch.skipped), (vec!["a"], 0));
        handle.write_all(rest.as_bytes()).unwrap();
        assert_eq!(containers(&reader.poll().unwrap()), ["b"]);
    }
}
