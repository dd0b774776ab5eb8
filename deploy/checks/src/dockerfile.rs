//! Just enough of Dockerfile syntax to check what an image build needs from
//! the repository: instructions (with `\` continuations), `COPY` sources and
//! `ARG` defaults.

/// One instruction, e.g. `COPY --from=build /out/x /usr/local/bin/x`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// 1-based line where it starts.
    pub line: usize,
    /// Upper-case keyword (`FROM`, `COPY`, `RUN`, ...).
    pub keyword: String,
    /// Everything after the keyword, continuations joined with spaces.
    pub args: String,
}

impl Instruction {
    /// Whitespace-separated words of the arguments.
    pub fn words(&self) -> Vec<&str> {
        self.args.split_whitespace().collect()
    }

    /// For COPY/ADD: (`--from` value if any, sources, destination).
    pub fn copy_parts(&self) -> Option<(Option<String>, Vec<String>, String)> {
        if self.keyword != "COPY" && self.keyword != "ADD" {
            return None;
        }
        let words = self.words();
        let from = words
            .iter()
            .find_map(|w| w.strip_prefix("--from="))
            .map(str::to_string);
        let paths: Vec<String> = words
            .iter()
            .filter(|w| !w.starts_with("--"))
            .map(|w| w.to_string())
            .collect();
        let (dest, sources) = paths.split_last()?;
        Some((from, sources.to_vec(), dest.clone()))
    }

    /// `KEYWORD args…` as joined from its lines, starting on line `line`.
    fn from_text(line: usize, text: &str) -> Self {
        let (kw, args) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
        Instruction {
            line,
            keyword: kw.to_ascii_uppercase(),
            args: args.trim().to_string(),
        }
    }
}

/// Splits a Dockerfile into instructions (comments and blank lines dropped).
pub fn parse(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if current.is_none() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        if current.is_some() && line.starts_with('#') {
            continue;
        }
        let (start, mut acc) = current.take().unwrap_or((n + 1, String::new()));
        let (body, continues) = match line.strip_suffix('\\') {
            Some(b) => (b.trim_end(), true),
            None => (line, false),
        };
        if !acc.is_empty() {
            acc.push(' ');
        }
        acc.push_str(body);
        if continues {
            current = Some((start, acc));
        } else {
            out.push(Instruction::from_text(start, &acc));
        }
    }
    // A continuation on the last line ends the instruction there.
    if let Some((start, acc)) = current {
        out.push(Instruction::from_text(start, &acc));
    }
    out
}

/// `ARG NAME=default` values declared anywhere in the file.
pub fn arg_defaults(instructions: &[Instruction]) -> Vec<(String, String)> {
    instructions
        .iter()
        .filter(|i| i.keyword == "ARG")
        .filter_map(|i| {
            i.args
                .split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}
