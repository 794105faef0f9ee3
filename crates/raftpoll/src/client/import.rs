//! `device import`: reads a CSV file, checks every line as `device add`
//! would, and cuts the devices into calls of bounded size. A bad file is
//! reported whole (every bad line by number, never a secret's value) and
//! nothing is sent.

use super::{
    AddDeviceArgs, ClientError, DEFAULT_COMMUNITY, DEFAULT_PORT, DEFAULT_VERSION, SnmpVersionArg,
    add_request,
};
use crate::api::admin::new_device;
use crate::proto::{self as pb};
use prost::Message as _;
use std::collections::HashMap;
use std::fmt;
use std::iter::Peekable;
use std::str::Chars;
use tokio::io::AsyncReadExt as _;

/// Devices per `AddDevices` call of an import: a few hundred kB per call.
const IMPORT_DEVICES_PER_CALL: usize = 5000;
/// Byte budget of one `AddDevices` call, below tonic's default 4 MiB limit
/// so even a node with default limits accepts it.
const IMPORT_BYTES_PER_CALL: usize = 3 * 1024 * 1024;

/// Reads `path` (`-`: standard input) and checks every line.
pub(super) async fn read_import(
    path: &std::path::Path,
) -> Result<Vec<pb::AddDeviceRequest>, ClientError> {
    let shown = path.display().to_string();
    let read_err = |e: std::io::Error| ClientError::ReadFile {
        path: shown.clone(),
        message: e.to_string(),
    };
    let mut bytes = Vec::new();
    if path.as_os_str() == "-" {
        tokio::io::stdin()
            .read_to_end(&mut bytes)
            .await
            .map_err(read_err)?;
    } else {
        bytes = tokio::fs::read(path).await.map_err(read_err)?;
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        let line = 1 + e.as_bytes()[..e.utf8_error().valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        ClientError::BadCsv {
            path: shown.clone(),
            problems: CsvProblems(vec![LineProblem::new(line, "not UTF-8 text")]),
        }
    })?;
    parse_import(&text).map_err(|problems| ClientError::BadCsv {
        path: shown,
        problems,
    })
}

/// Splits an import into calls of at most [`IMPORT_DEVICES_PER_CALL`]
/// devices and about [`IMPORT_BYTES_PER_CALL`] bytes, keeping the order.
pub(super) fn import_batches(devices: Vec<pb::AddDeviceRequest>) -> Vec<Vec<pb::AddDeviceRequest>> {
    // Length-delimited size, as it travels inside the request.
    crate::api::split_by_size(
        devices,
        IMPORT_DEVICES_PER_CALL,
        IMPORT_BYTES_PER_CALL as u64,
        |d| (d.encoded_len() + 8) as u64,
    )
}

/// One bad line of an import file. Never holds a secret's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineProblem {
    /// 1-based line number in the file.
    pub line: usize,
    pub message: String,
}

impl LineProblem {
    fn new(line: usize, message: impl Into<String>) -> Self {
        LineProblem {
            line,
            message: message.into(),
        }
    }
}

/// Every bad line of an import file, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvProblems(pub Vec<LineProblem>);

/// At most this many bad lines are printed; the rest are counted.
const PROBLEMS_SHOWN: usize = 20;

impl fmt::Display for CsvProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        let lines = if n == 1 { "line" } else { "lines" };
        write!(f, "{n} bad {lines}, nothing was sent")?;
        for p in self.0.iter().take(PROBLEMS_SHOWN) {
            write!(f, "\n  line {}: {}", p.line, p.message)?;
        }
        if n > PROBLEMS_SHOWN {
            write!(f, "\n  and {} more", n - PROBLEMS_SHOWN)?;
        }
        Ok(())
    }
}

/// Columns of an import file, as named in its header.
const CSV_COLUMNS: [&str; 11] = [
    "hostname",
    "address",
    "port",
    "version",
    "community",
    "v3_user",
    "auth_proto",
    "auth_pass",
    "priv_proto",
    "priv_pass",
    "group",
];

/// A CSV record: the line it starts on and its cells.
#[derive(Debug, PartialEq)]
struct Record {
    line: usize,
    cells: Vec<String>,
}

/// A record that breaks the import's quoting rules: where, and why. Holds no
/// cell content (it might be a secret).
#[derive(Debug, PartialEq)]
struct SyntaxError {
    line: usize,
    /// 0-based index of the cell in its record.
    cell: usize,
    problem: &'static str,
}

const UNTERMINATED: &str = "unterminated quoted cell";

/// Splits CSV text into records and bad records, in file order (RFC 4180:
/// commas, quoted cells that may hold commas, newlines and doubled quotes;
/// CRLF or LF). Unquoted cells are trimmed; blank lines are skipped.
///
/// The csv crate reads the records. It has no strict mode, so
/// [`strict_quoting`] goes first to keep the import's rules.
fn csv_records(text: &str) -> Vec<Result<Record, SyntaxError>> {
    let checked = strict_quoting(text);
    let mut out: Vec<Result<Record, SyntaxError>> = checked.errors.into_iter().map(Err).collect();
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        // Only LF ends a record: a CR is trimmed off a cell, as before.
        .terminator(csv::Terminator::Any(b'\n'))
        .from_reader(checked.clean.as_bytes());
    // csv numbers only the lines it is given (bad and blank ones are left
    // out), so each record takes its file line from the check, in order.
    for (record, &line) in reader.records().zip(&checked.lines) {
        out.push(match record {
            Ok(r) => Ok(Record {
                line,
                cells: r.iter().map(str::to_string).collect(),
            }),
            // Not expected from checked UTF-8 text in flexible mode.
            Err(_) => Err(SyntaxError {
                line,
                cell: 0,
                problem: "unreadable record",
            }),
        });
    }
    out.sort_by_key(|r| match r {
        Ok(r) => r.line,
        Err(e) => e.line,
    });
    out
}

/// Text that passed [`strict_quoting`], and what it left out.
struct Checked {
    /// The good records, one per line (a quoted cell may hold more).
    clean: String,
    /// The file line each good record starts on.
    lines: Vec<usize>,
    errors: Vec<SyntaxError>,
}

/// Applies the import's quoting rules, which the csv crate does not: it
/// keeps a quote inside an unquoted cell or text after a closing quote as
/// text, ends an unterminated quoted cell at the end of the file, and reads
/// blanks before an opening quote as an unquoted cell.
///
/// Keeps the good records with the blanks around every cell dropped, and
/// reports each bad one, skipping it up to the end of its line so every bad
/// line is reported. Blank lines are left out.
fn strict_quoting(text: &str) -> Checked {
    let mut checked = Checked {
        clean: String::with_capacity(text.len()),
        lines: Vec::new(),
        errors: Vec::new(),
    };
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while chars.peek().is_some() {
        let start = line;
        match clean_record(&mut chars, &mut line) {
            Ok(record) if record.is_empty() => {}
            Ok(record) => {
                checked.clean.push_str(&record);
                checked.clean.push('\n');
                checked.lines.push(start);
            }
            Err(e) => {
                checked.errors.push(e);
                skip_line(&mut chars, &mut line);
            }
        }
    }
    checked
}

/// How a cell ended.
enum CellEnd {
    Comma,
    Record,
}

/// Reads one record through its line break; returns it with the blanks
/// around its cells dropped.
fn clean_record(chars: &mut Peekable<Chars>, line: &mut usize) -> Result<String, SyntaxError> {
    let start = *line;
    let mut record = String::new();
    let mut cell = 0;
    loop {
        while matches!(chars.peek(), Some(' ' | '\t')) {
            chars.next();
        }
        let end = if chars.peek() == Some(&'"') {
            quoted_cell(chars, line, &mut record)
        } else {
            unquoted_cell(chars, line, &mut record)
        };
        match end {
            Ok(CellEnd::Comma) => record.push(','),
            Ok(CellEnd::Record) => return Ok(record),
            Err(problem) => {
                // An unterminated cell runs to the end: name where it began.
                let line = if problem == UNTERMINATED {
                    start
                } else {
                    *line
                };
                return Err(SyntaxError {
                    line,
                    cell,
                    problem,
                });
            }
        }
        cell += 1;
    }
}

/// Copies a quoted cell, quotes included, and consumes what ends it.
fn quoted_cell(
    chars: &mut Peekable<Chars>,
    line: &mut usize,
    out: &mut String,
) -> Result<CellEnd, &'static str> {
    chars.next();
    out.push('"');
    loop {
        match chars.next() {
            None => return Err(UNTERMINATED),
            Some('"') if chars.peek() == Some(&'"') => {
                chars.next();
                out.push_str("\"\"");
            }
            Some('"') => break,
            Some(c) => {
                if c == '\n' {
                    *line += 1;
                }
                out.push(c);
            }
        }
    }
    out.push('"');
    while matches!(chars.peek(), Some(' ' | '\t' | '\r')) {
        chars.next();
    }
    match chars.next() {
        Some(',') => Ok(CellEnd::Comma),
        None => Ok(CellEnd::Record),
        Some('\n') => {
            *line += 1;
            Ok(CellEnd::Record)
        }
        Some(_) => Err("text after the closing quote"),
    }
}

/// Copies an unquoted cell, trimmed, and consumes what ends it.
fn unquoted_cell(
    chars: &mut Peekable<Chars>,
    line: &mut usize,
    out: &mut String,
) -> Result<CellEnd, &'static str> {
    let mut cell = String::new();
    let end = loop {
        match chars.next() {
            Some(',') => break CellEnd::Comma,
            None => break CellEnd::Record,
            Some('\n') => {
                *line += 1;
                break CellEnd::Record;
            }
            Some('"') => return Err("quote inside an unquoted cell (quote the whole cell)"),
            Some(c) => cell.push(c),
        }
    };
    out.push_str(cell.trim());
    Ok(end)
}

/// Skips the rest of a bad record's line, so the next line is read afresh.
fn skip_line(chars: &mut Peekable<Chars>, line: &mut usize) {
    for c in chars.by_ref() {
        if c == '\n' {
            *line += 1;
            return;
        }
    }
}

/// Parses an import file into checked device requests: the same requests
/// and the same checks as `device add`. Reports every bad line.
pub fn parse_import(text: &str) -> Result<Vec<pb::AddDeviceRequest>, CsvProblems> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = csv_records(text).into_iter();
    let header = header_record(records.next())?;
    let columns = header_columns(&header)?;
    let mut problems = Vec::new();
    let mut devices = Vec::new();
    let mut first_line: HashMap<String, usize> = HashMap::new();
    for record in records {
        match device_line(record, &columns, &mut first_line) {
            Ok(request) => devices.push(request),
            Err(problem) => problems.push(problem),
        }
    }
    if !problems.is_empty() {
        return Err(CsvProblems(problems));
    }
    if devices.is_empty() {
        return Err(CsvProblems(vec![LineProblem::new(
            header.line,
            "no device lines after the header",
        )]));
    }
    Ok(devices)
}

/// The first record, which names the columns.
fn header_record(first: Option<Result<Record, SyntaxError>>) -> Result<Record, CsvProblems> {
    match first {
        None => Err(CsvProblems(vec![LineProblem::new(
            1,
            "empty file: expected a header line naming the columns, e.g. hostname,address,community",
        )])),
        Some(Err(e)) => Err(CsvProblems(vec![LineProblem::new(
            e.line,
            format!("header, column {}: {}", e.cell + 1, e.problem),
        )])),
        Some(Ok(r)) => Ok(r),
    }
}

/// One device line, checked as `device add` would check it; `first_line`
/// remembers each hostname's line to name duplicates.
fn device_line(
    record: Result<Record, SyntaxError>,
    columns: &[&str],
    first_line: &mut HashMap<String, usize>,
) -> Result<pb::AddDeviceRequest, LineProblem> {
    let record = record.map_err(|e| {
        let column = columns
            .get(e.cell)
            .copied()
            .unwrap_or("beyond the last column");
        LineProblem::new(
            e.line,
            format!("column {} ({column}): {}", e.cell + 1, e.problem),
        )
    })?;
    if record.cells.len() != columns.len() {
        return Err(LineProblem::new(
            record.line,
            format!(
                "{} cells, but the header has {} columns",
                record.cells.len(),
                columns.len()
            ),
        ));
    }
    let row: HashMap<&str, &str> = columns
        .iter()
        .copied()
        .zip(record.cells.iter().map(String::as_str))
        .collect();
    let request = row_request(&row).map_err(|m| LineProblem::new(record.line, m))?;
    let device = new_device(request.clone())
        .map_err(|status| LineProblem::new(record.line, csv_wording(status.message())))?;
    if let Some(first) = first_line.insert(device.hostname.clone(), record.line) {
        return Err(LineProblem::new(
            record.line,
            format!("hostname '{}' already on line {first}", device.hostname),
        ));
    }
    Ok(request)
}

/// The header's column names, checked: known, not repeated, `hostname` present.
fn header_columns(header: &Record) -> Result<Vec<&'static str>, CsvProblems> {
    let mut columns = Vec::with_capacity(header.cells.len());
    let mut problems = Vec::new();
    for (i, name) in header.cells.iter().enumerate() {
        let wanted = name.trim().to_ascii_lowercase();
        match CSV_COLUMNS.iter().find(|c| **c == wanted) {
            Some(c) if columns.contains(c) => problems.push(format!("column '{c}' appears twice")),
            Some(c) => columns.push(*c),
            None if wanted.is_empty() => problems.push(format!("column {} has no name", i + 1)),
            None => problems.push(format!(
                "unknown column '{}' (known: {})",
                name.trim(),
                CSV_COLUMNS.join(", ")
            )),
        }
    }
    if problems.is_empty() && !columns.contains(&"hostname") {
        problems.push("no 'hostname' column".into());
    }
    if problems.is_empty() {
        Ok(columns)
    } else {
        Err(CsvProblems(
            problems
                .into_iter()
                .map(|m| LineProblem::new(header.line, format!("header: {m}")))
                .collect(),
        ))
    }
}

/// One line as `device add` would send it: empty or missing cells take the
/// same defaults.
fn row_request(row: &HashMap<&str, &str>) -> Result<pb::AddDeviceRequest, String> {
    let cell = |name: &str| row.get(name).copied().filter(|v| !v.is_empty());
    let owned = |name: &str| cell(name).map(str::to_string);
    let port = match cell("port") {
        None => DEFAULT_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("port '{p}': expected a number from 1 to 65535"))?,
    };
    let snmp_version = match cell("version") {
        None => DEFAULT_VERSION,
        Some(v) => match v.to_ascii_lowercase().as_str() {
            "v1" | "1" => SnmpVersionArg::V1,
            "v2c" | "2c" | "2" => SnmpVersionArg::V2c,
            "v3" | "3" => SnmpVersionArg::V3,
            _ => return Err(format!("version '{v}': expected v1, v2c or v3")),
        },
    };
    let group = match cell("group") {
        None => 0,
        Some(g) => g
            .parse::<u32>()
            .map_err(|_| format!("group '{g}': expected a number from 0 to 4294967295"))?,
    };
    Ok(add_request(AddDeviceArgs {
        hostname: cell("hostname").unwrap_or_default().to_string(),
        ip: owned("address"),
        port,
        snmp_version,
        community: owned("community").unwrap_or_else(|| DEFAULT_COMMUNITY.into()),
        v3_user: owned("v3_user"),
        auth_proto: owned("auth_proto"),
        auth_pass: owned("auth_pass"),
        priv_proto: owned("priv_proto"),
        priv_pass: owned("priv_pass"),
        group,
    }))
}

/// The server's checks name `device add` flags; an import names columns.
fn csv_wording(message: &str) -> String {
    [
        ("--v3-user", "v3_user"),
        ("--auth-proto", "auth_proto"),
        ("--auth-pass", "auth_pass"),
        ("--priv-proto", "priv_proto"),
        ("--priv-pass", "priv_pass"),
    ]
    .iter()
    .fold(message.to_string(), |m, (flag, column)| {
        m.replace(flag, column)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<LineProblem> {
        match parse_import(text) {
            Ok(devices) => panic!("accepted: {devices:?}"),
            Err(p) => p.0,
        }
    }

    fn creds(r: &pb::AddDeviceRequest) -> pb::Credentials {
        r.credentials.clone().unwrap_or_default()
    }

    #[test]
    fn quoted_cells_hold_commas_quotes_and_newlines() {
        let text = "hostname,community,address\r\n\
                    \"sw1\",  \"pa\"\"ss,word\" ,127.0.0.1\r\n\
                    \n\
                    sw2 , \"multi\nline\", \"10.0.0.2\"\n";
        let devices = parse_import(text).unwrap();
        assert_eq!(devices.len(), 2);
        assert_eq!(devices[0].hostname, "sw1");
        assert_eq!(creds(&devices[0]).community, "pa\"ss,word");
        assert_eq!(devices[0].address, "127.0.0.1");
        assert_eq!(devices[1].hostname, "sw2");
        assert_eq!(creds(&devices[1]).community, "multi\nline");
        assert_eq!(devices[1].address, "10.0.0.2");
        // Line numbers count physical lines, including those inside quotes.
        let records = csv_records("a\n\"x\ny\"\nb\n");
        let lines: Vec<usize> = records.iter().map(|r| r.as_ref().unwrap().line).collect();
        assert_eq!(lines, [1, 2, 4]);
    }

    #[test]
    fn missing_columns_and_empty_cells_take_device_add_defaults() {
        let text = "\u{feff}Hostname, port ,version,group\nsw1,,,\nsw2,1161,v1,7\n";
        let devices = parse_import(text).unwrap();
        let d = &devices[0];
        assert_eq!((d.hostname.as_str(), d.address.as_str()), ("sw1", ""));
        assert_eq!((d.port, d.group), (161, 0));
        assert_eq!(creds(d).version, "v2c");
        assert_eq!(creds(d).community, "public");
        // The same request `device add sw1` builds.
        let add = add_request(AddDeviceArgs {
            hostname: "sw1".into(),
            ip: None,
            port: DEFAULT_PORT,
            snmp_version: DEFAULT_VERSION,
            community: DEFAULT_COMMUNITY.into(),
            v3_user: None,
            auth_proto: None,
            auth_pass: None,
            priv_proto: None,
            priv_pass: None,
            group: 0,
        });
        assert_eq!(d, &add);
        let d = &devices[1];
        assert_eq!((d.port, d.group), (1161, 7));
        assert_eq!(creds(d).version, "v1");
        // The server fills in the address from the hostname, as for `device add`.
        assert_eq!(new_device(devices[0].clone()).unwrap().address, "sw1");
    }

    #[test]
    fn header_problems_are_named() {
        let p = problems("hostname,comunity,address\nsw1,x,127.0.0.1\n");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].line, 1);
        assert!(
            p[0].message
                .starts_with("header: unknown column 'comunity'"),
            "{}",
            p[0].message
        );
        let p = problems("address,community\n127.0.0.1,x\n");
        assert_eq!(p[0].message, "header: no 'hostname' column");
        let p = problems("hostname,port,Port\nsw1,1,2\n");
        assert_eq!(p[0].message, "header: column 'port' appears twice");
        let p = problems("hostname,,port\n");
        assert_eq!(p[0].message, "header: column 2 has no name");
        assert!(problems("")[0].message.starts_with("empty file"));
        assert_eq!(
            problems("hostname\n\n")[0].message,
            "no device lines after the header"
        );
    }

    #[test]
    fn every_bad_line_is_reported_with_its_number() {
        let text = "hostname,address,port,community\n\
                    ok1,127.0.0.1,161,c\n\
                    bad port,127.0.0.1,70000,c\n\
                    ok2,999.1.1.1,,c\n\
                    \"multi\nline\",127.0.0.1,1,c\n\
                    short,127.0.0.1\n\
                    ok1,127.0.0.1,162,c\n\
                    ok3,127.0.0.1,x\"y,c\n\
                    ok4,127.0.0.1,,c\n";
        let p = problems(text);
        let lines: Vec<usize> = p.iter().map(|p| p.line).collect();
        assert_eq!(lines, [3, 4, 5, 7, 8, 9], "{p:?}");
        assert_eq!(
            p[0].message,
            "port '70000': expected a number from 1 to 65535"
        );
        assert!(p[1].message.contains("invalid address '999.1.1.1'"));
        assert!(
            p[2].message.contains("invalid hostname"),
            "{}",
            p[2].message
        );
        assert_eq!(p[3].message, "2 cells, but the header has 4 columns");
        assert_eq!(p[4].message, "hostname 'ok1' already on line 2");
        assert_eq!(
            p[5].message,
            "column 3 (port): quote inside an unquoted cell (quote the whole cell)"
        );
    }

    #[test]
    fn no_secret_in_any_problem() {
        let secrets = ["Sekr1t-community", "Au7h-p4", "Priv-pass-99x"];
        let text = format!(
            "hostname,version,community,v3_user,auth_proto,auth_pass,priv_proto,priv_pass\n\
             a,v2c,\"{c}\"x,,,,,\n\
             b,v2c,{c}\"q,,,,,\n\
             c,v3,,bob,sha,{a},,\n\
             d,v3,,bob,sha,{a}-long-enough,aes,\"{p}\" z\n\
             e,v3,,bob,sha,{a}-long-enough,aes,\"{p}\n",
            c = secrets[0],
            a = secrets[1],
            p = secrets[2],
        );
        let p = problems(&text);
        assert_eq!(
            p.iter().map(|p| p.line).collect::<Vec<_>>(),
            [2, 3, 4, 5, 6]
        );
        assert_eq!(
            p[0].message,
            "column 3 (community): text after the closing quote"
        );
        assert_eq!(
            p[1].message,
            "column 3 (community): quote inside an unquoted cell (quote the whole cell)"
        );
        assert!(
            p[2].message.contains("auth_pass must be at least 8"),
            "{}",
            p[2].message
        );
        assert_eq!(
            p[3].message,
            "column 8 (priv_pass): text after the closing quote"
        );
        assert_eq!(
            p[4].message,
            "column 8 (priv_pass): unterminated quoted cell"
        );
        let shown = CsvProblems(p).to_string();
        for s in secrets {
            assert!(!shown.contains(s), "{s} leaked: {shown}");
        }
    }

    /// Cases where the csv crate alone would read differently.
    #[test]
    fn csv_crate_edge_cases_keep_the_import_rules() {
        // Too many cells is counted like too few.
        let p = problems("hostname,port\nsw1,161,x\n");
        assert_eq!(p[0].message, "3 cells, but the header has 2 columns");
        // Lines after a multi-line quoted cell, a bad line and blank lines
        // (blanks only, or CRLF) keep the file's numbering.
        let text = "hostname,community\r\n\
                    sw1,\"two\r\nlines\"\r\n\
                    \x20\t\r\n\
                    sw2,a\"b\r\n\
                    \r\n\
                    sw3,c,extra\r\n";
        let p = problems(text);
        assert_eq!(p.iter().map(|p| p.line).collect::<Vec<_>>(), [5, 7]);
        // Blanks inside quotes stay; a BOM before a quoted header is dropped.
        let devices = parse_import("\u{feff}\"hostname\",community\nsw1,\" c \"\n").unwrap();
        assert_eq!(creds(&devices[0]).community, " c ");
        // A line holding only an empty quoted cell is a record, not a blank line.
        let p = problems("hostname,community\n\"\"\nsw1,c\n");
        assert_eq!(
            p,
            [LineProblem::new(2, "1 cells, but the header has 2 columns")]
        );
        // Blanks between a closing quote and the line's end are not text.
        let devices = parse_import("hostname\n\"sw1\" \t\r\n").unwrap();
        assert_eq!(devices[0].hostname, "sw1");
    }

    #[test]
    fn long_reports_are_capped() {
        let mut text = String::from("hostname,port\n");
        for i in 0..25 {
            text.push_str(&format!("h{i},0\n"));
        }
        let p = CsvProblems(problems(&text));
        assert_eq!(p.0.len(), 25);
        let shown = p.to_string();
        assert!(shown.starts_with("25 bad lines, nothing was sent\n  line 2: port '0'"));
        assert!(shown.contains("\n  line 21: ") && !shown.contains("line 22:"));
        assert!(shown.ends_with("\n  and 5 more"), "{shown}");
    }

    #[test]
    fn import_calls_are_bounded() {
        let text: String = std::iter::once("hostname,community\n".to_string())
            .chain((0..12_001).map(|i| format!("h{i},c{i}\n")))
            .collect();
        let devices = parse_import(&text).unwrap();
        let batches = import_batches(devices.clone());
        assert_eq!(
            batches.iter().map(Vec::len).collect::<Vec<_>>(),
            [5000, 5000, 2001]
        );
        assert_eq!(batches.concat(), devices);
        let fat: Vec<pb::AddDeviceRequest> = (0..4)
            .map(|i| pb::AddDeviceRequest {
                hostname: format!("f{i}"),
                credentials: Some(pb::Credentials {
                    community: "x".repeat(1024 * 1024),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect();
        let batches = import_batches(fat);
        assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2]);
        for b in batches {
            let call = pb::AddDevicesRequest { devices: b };
            assert!(call.encoded_len() <= IMPORT_BYTES_PER_CALL);
        }
    }
}
