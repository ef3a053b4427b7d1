//! Kubernetes manifests from files, directories and stdin: multi-document YAML, JSON,
//! `kind: List`, and what `helm template` and `kustomize build` print.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// One object found in the input.
#[derive(Debug, Clone)]
pub struct Document {
    /// The file, or `-` for stdin.
    pub file: String,
    /// 0-based index of the document in its file (items of a List share it).
    pub index: usize,
    pub object: Value,
}

/// A file or document that could not be read.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InputError {
    pub file: String,
    pub document: Option<usize>,
    pub message: String,
}

/// Most bytes read from one file or stdin.
const MAX_INPUT_BYTES: u64 = 64 * 1024 * 1024;

/// Reads every path (`-` is stdin; directories are walked for *.yaml, *.yml, *.json).
pub fn read_all(paths: &[PathBuf]) -> (Vec<Document>, Vec<InputError>) {
    let mut documents = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            match std::io::stdin()
                .take(MAX_INPUT_BYTES)
                .read_to_string(&mut text)
            {
                Ok(_) => parse_text("-", &text, false, &mut documents, &mut errors),
                Err(e) => errors.push(InputError {
                    file: "-".into(),
                    document: None,
                    message: format!("cannot read stdin: {e}"),
                }),
            }
        } else if path.is_dir() {
            let mut files = Vec::new();
            walk(path, &mut files, &mut errors);
            files.sort();
            for file in files {
                read_file(&file, &mut documents, &mut errors);
            }
        } else {
            read_file(path, &mut documents, &mut errors);
        }
    }
    (documents, errors)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>, errors: &mut Vec<InputError>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            errors.push(InputError {
                file: dir.display().to_string(),
                document: None,
                message: format!("cannot read directory: {e}"),
            });
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            walk(&path, files, errors);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            files.push(path);
        }
    }
}

fn read_file(path: &Path, documents: &mut Vec<Document>, errors: &mut Vec<InputError>) {
    let name = path.display().to_string();
    let text = std::fs::File::open(path).and_then(|f| {
        let mut text = String::new();
        f.take(MAX_INPUT_BYTES)
            .read_to_string(&mut text)
            .map(|_| text)
    });
    match text {
        Ok(text) => {
            let json = path.extension().and_then(|e| e.to_str()) == Some("json");
            parse_text(&name, &text, json, documents, errors);
        }
        Err(e) => errors.push(InputError {
            file: name,
            document: None,
            message: format!("cannot read: {e}"),
        }),
    }
}

/// Splits a text into its documents; a document that does not parse is reported with its
/// index and the rest are still read.
pub fn parse_text(
    file: &str,
    text: &str,
    json: bool,
    documents: &mut Vec<Document>,
    errors: &mut Vec<InputError>,
) {
    if json {
        match serde_json::from_str::<Value>(text) {
            Ok(value) => push_objects(file, 0, value, documents),
            Err(e) => errors.push(InputError {
                file: file.into(),
                document: Some(0),
                message: format!("invalid JSON: {e}"),
            }),
        }
        return;
    }
    for (index, chunk) in split_documents(text).into_iter().enumerate() {
        match yaml_serde::from_str::<Value>(chunk) {
            Ok(value) => push_objects(file, index, value, documents),
            Err(e) => errors.push(InputError {
                file: file.into(),
                document: Some(index),
                message: format!("invalid YAML: {e}"),
            }),
        }
    }
}

/// Splits a YAML stream at its `---` document markers (at column 0, where a marker must
/// be), so that a document with a syntax error costs only itself. A leading marker opens
/// the first document rather than ending an empty one.
fn split_documents(text: &str) -> Vec<&str> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\n', '\r']);
        if bare == "---" || bare.starts_with("--- ") {
            chunks.push(text.get(start..offset).unwrap_or_default());
            // Content after the marker on the same line belongs to the new document.
            start = offset + 3;
        }
        offset += line.len();
    }
    chunks.push(text.get(start..).unwrap_or_default());
    let blank = |c: &str| {
        c.lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    };
    if chunks.len() > 1 && chunks.first().is_some_and(|c| blank(c)) {
        chunks.remove(0);
    }
    chunks
}

/// Adds an object, or the items of a `kind: List`; empty documents are skipped.
fn push_objects(file: &str, index: usize, value: Value, documents: &mut Vec<Document>) {
    match value {
        Value::Null => {}
        Value::Object(ref map)
            if map
                .get("kind")
                .and_then(Value::as_str)
                .is_some_and(|k| k.ends_with("List")) =>
        {
            if let Some(Value::Array(items)) = map.get("items") {
                for item in items {
                    push_objects(file, index, item.clone(), documents);
                }
            }
        }
        object => documents.push(Document {
            file: file.into(),
            index,
            object,
        }),
    }
}
