//! The Dockerfile parser, printer and expansion: a corpus of files with their
//! expected parse or error, word expansion tables, and a generated
//! parse -> print -> parse property.

use image_testsupport::rng::Rng;
use std::collections::BTreeMap;
use std::path::Path;

use image_build::dockerfile::{
    self, expand_word, BuildInputs, Command, Directives, Dockerfile, ExpandProblem, Expander,
    Problem,
};
use image_core::error::{Classify, ErrorKind};

/// The directives and every command in order (FROMs included), without
/// positions: what must survive printing.
fn shape(df: &Dockerfile) -> (Directives, Vec<Command>) {
    (df.directives.clone(), df.commands())
}

/// Parsing the printed form gives the same tree, and printing is a fixed point.
fn assert_print_stable(df: &Dockerfile, origin: &str) {
    let printed = dockerfile::print(df);
    let again = dockerfile::parse("printed", &printed)
        .unwrap_or_else(|e| panic!("{origin}: printed form does not parse: {e}\n{printed}"));
    assert_eq!(
        shape(&again),
        shape(df),
        "{origin}: printed form\n{printed}"
    );
    assert_eq!(
        dockerfile::print(&again),
        printed,
        "{origin}: print is a fixed point"
    );
}

/// Every `*.Dockerfile` of the corpus parses to its `.json`, or fails with
/// the message chain of its `.err`, which says nothing twice. `BLESS=1` writes the expectations (review the
/// diff before committing).
#[test]
fn corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dockerfiles");
    let bless = std::env::var_os("BLESS").is_some();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "Dockerfile"))
        .collect();
    files.sort();
    assert!(files.len() >= 60, "the corpus has {} files", files.len());
    let (mut good, mut bad) = (0, 0);
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let json = path.with_extension("json");
        let err = path.with_extension("err");
        match dockerfile::parse(&name, &text) {
            Ok(df) => {
                good += 1;
                assert_print_stable(&df, &name);
                let got = serde_json::to_string_pretty(&df).unwrap() + "\n";
                if bless {
                    std::fs::write(&json, &got).unwrap();
                }
                let want = std::fs::read_to_string(&json)
                    .unwrap_or_else(|_| panic!("{name} parses, but has no .json: {got}"));
                assert_eq!(got, want, "{name}");
            }
            Err(e) => {
                bad += 1;
                assert_eq!(e.kind(), ErrorKind::InvalidInput);
                image_testsupport::chain::assert_said_once(&e);
                let got = format!("{}\n", image_core::error::Chain(&e));
                if bless {
                    std::fs::write(&err, &got).unwrap();
                }
                let want = std::fs::read_to_string(&err)
                    .unwrap_or_else(|_| panic!("{name} fails, but has no .err: {got}"));
                assert_eq!(got, want, "{name}");
            }
        }
    }
    assert!(good >= 45 && bad >= 15, "{good} good, {bad} bad");
}

fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
    move |n| {
        pairs
            .iter()
            .find(|(k, _)| *k == n)
            .map(|(_, v)| v.to_string())
    }
}

#[test]
fn word_expansion_as_docker_shell_lexer() {
    let vars = [
        ("A", "apple"),
        ("E", ""),
        ("P", "/usr/local/bin/tool.tar.gz"),
    ];
    let cases: &[(&str, &str)] = &[
        ("$A", "apple"),
        ("${A}", "apple"),
        ("x${A}y", "xappley"),
        ("$A$A", "appleapple"),
        ("$Z", ""),
        ("$", "$"),
        ("a$", "a$"),
        ("$1x", "x"),
        ("${Z:-def}", "def"),
        ("${E:-def}", "def"),
        ("${E-def}", ""),
        ("${A:-def}", "apple"),
        ("${Z:+alt}", ""),
        ("${E:+alt}", ""),
        ("${E+alt}", "alt"),
        ("${A:+alt}", "alt"),
        ("${Z:-${A}}", "apple"),
        ("${Z:-$A and more}", "apple and more"),
        ("${P#*/}", "usr/local/bin/tool.tar.gz"),
        ("${P##*/}", "tool.tar.gz"),
        ("${P%.*}", "/usr/local/bin/tool.tar"),
        ("${P%%.*}", "/usr/local/bin/tool"),
        ("${P#nomatch}", "/usr/local/bin/tool.tar.gz"),
        ("${A/p/P}", "aPple"),
        ("${A//p/P}", "aPPle"),
        ("${A/p}", "aple"),
        ("${A/a*/x}", "x"),
        ("'$A'", "$A"),
        ("\"$A\"", "apple"),
        ("\"a\\\"b\"", "a\"b"),
        ("\"a\\nb\"", "a\\nb"),
        ("\"\\$A\"", "$A"),
        ("\\$A", "$A"),
        ("a\\ b", "a b"),
        ("a\\", "a"),
        ("'a'\"b\"c", "abc"),
    ];
    for (word, want) in cases {
        let got = expand_word(word, '\\', &env(&vars));
        assert_eq!(got.as_deref(), Ok(*want), "{word}");
    }
    assert_eq!(expand_word("`$A", '`', &env(&vars)).as_deref(), Ok("$A"));
}

#[test]
fn word_expansion_errors() {
    let vars = [("E", "")];
    let cases: &[(&str, &str)] = &[
        (
            "'abc",
            "unexpected end of statement while looking for matching single-quote",
        ),
        (
            "\"abc",
            "unexpected end of statement while looking for matching double-quote",
        ),
        ("${A", "syntax error: missing '}'"),
        ("${A:-x", "syntax error: missing '}'"),
        ("${}", "bad substitution"),
        ("${A:#x}", "unsupported modifier (:#) in substitution"),
        ("${A!x}", "unsupported modifier (!) in substitution"),
        ("${Z:?}", "Z: is not allowed to be unset"),
        ("${E:?}", "E: is not allowed to be empty"),
        ("${Z?must be set}", "Z: must be set"),
    ];
    for (word, want) in cases {
        let got = expand_word(word, '\\', &env(&vars)).unwrap_err();
        assert_eq!(got.to_string(), *want, "{word}");
    }
    let deep = "${A:-".repeat(100) + &"}".repeat(100);
    assert_eq!(
        expand_word(&deep, '\\', &env(&vars)),
        Err(ExpandProblem::TooDeep(dockerfile::MAX_DEPTH))
    );
    // Replacing tries every start: bounded work, a typed error beyond it.
    let long = "a".repeat(200_000);
    assert_eq!(
        expand_word("${L//*b/x}", '\\', &|_| Some(long.clone())),
        Err(ExpandProblem::TooComplex(dockerfile::REPLACE_BUDGET))
    );
    let ok = "a".repeat(2_000) + "b";
    assert_eq!(
        expand_word("${L//a*b/x}", '\\', &|_| Some(ok.clone())).as_deref(),
        Ok("x")
    );
    // Growth is bounded: each reference doubles nothing past the cap.
    let big = "x".repeat(1 << 16);
    let many = "$B".repeat(64);
    assert_eq!(
        expand_word(&many, '\\', &|_| Some(big.clone())),
        Err(ExpandProblem::TooLong(dockerfile::MAX_EXPANDED))
    );
}

fn inputs(args: &[(&str, &str)]) -> BuildInputs {
    BuildInputs {
        build_args: args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        target: "linux/arm64/v8".parse().unwrap(),
        build: "linux/amd64".parse().unwrap(),
    }
}

fn expand_all(text: &str, args: &[(&str, &str)]) -> Result<Vec<Vec<Command>>, String> {
    let df = dockerfile::parse("Dockerfile", text).map_err(|e| e.to_string())?;
    let inputs = inputs(args);
    let ex = Expander::new("Dockerfile", &df, &inputs).map_err(|e| e.to_string())?;
    df.stages
        .iter()
        .map(|s| ex.stage(s, BTreeMap::new()).map_err(|e| e.to_string()))
        .collect()
}

fn word_of(c: &Command) -> String {
    match c {
        Command::From(f) => format!("{} {:?}", f.image, f.platform),
        Command::User(s) | Command::Workdir(s) | Command::Stopsignal(s) => s.clone(),
        Command::Env(kv) | Command::Label(kv) => kv
            .iter()
            .map(|kv| format!("{}={}", kv.key, kv.value))
            .collect::<Vec<_>>()
            .join(" "),
        Command::Arg(a) => a
            .iter()
            .map(|a| format!("{}={:?}", a.name, a.default))
            .collect::<Vec<_>>()
            .join(" "),
        Command::Expose(p) => p.join(" "),
        Command::Copy(c) => format!("{:?} {} {:?} {:?}", c.sources, c.dest, c.from, c.chown),
        Command::Add(a) => format!("{:?} {} {:?}", a.sources, a.dest, a.checksum),
        Command::Volume(v) => v.paths.join(" "),
        Command::Run(r) => format!("{:?} {:?}", r.command, r.mounts),
        Command::Cmd(c) | Command::Entrypoint(c) => format!("{c:?}"),
        other => format!("{other:?}"),
    }
}

#[test]
fn expansion_scopes_as_docker() {
    let text = "\
ARG VERSION=1.0
ARG BASE=alpine:${VERSION}
FROM --platform=$BUILDPLATFORM $BASE AS build
ARG VERSION
ARG TARGETARCH
ENV A=one
ENV A=two B=$A
WORKDIR /src/$VERSION
COPY --chown=$A:$A ${TARGETARCH}/bin* /out/
RUN echo $A $VERSION
LABEL \"k $A\"=\"v $B\"
USER ${A}
EXPOSE ${PORT:-80}/tcp
STOPSIGNAL SIG${SIG:-TERM}
VOLUME /data/$A
CMD echo $A
FROM scratch
ARG TARGETPLATFORM
ARG OTHER=$VERSION
ENV ARGV=$TARGETPLATFORM
ARG ARGV=shadowed
USER $ARGV $OTHER
ADD --checksum=$NONE x /y
";
    let got = expand_all(text, &[]).unwrap();
    let words: Vec<Vec<String>> = got
        .iter()
        .map(|s| s.iter().map(word_of).collect())
        .collect();
    assert_eq!(
        words[0],
        vec![
            "alpine:1.0 Some(\"linux/amd64\")",
            "VERSION=Some(\"1.0\")",
            "TARGETARCH=Some(\"arm64\")",
            "A=one",
            "A=two B=one",
            "/src/1.0",
            "[\"arm64/bin*\"] /out/ None Some(\"two:two\")",
            "Shell(\"echo $A $VERSION\") []",
            "k two=v one",
            "two",
            "80/tcp",
            "SIGTERM",
            "/data/two",
            "Shell(\"echo $A\")",
        ]
    );
    assert_eq!(
        words[1],
        vec![
            "scratch None",
            "TARGETPLATFORM=Some(\"linux/arm64/v8\")",
            "OTHER=Some(\"\")",
            "ARGV=linux/arm64/v8",
            "ARGV=Some(\"shadowed\")",
            "linux/arm64/v8 ",
            "[\"x\"] /y Some(\"\")",
        ]
    );
    // A build arg overrides a default, in the global scope and in a stage,
    // only where the ARG is declared.
    let got = expand_all(
        "ARG V=1\nFROM img:$V\nARG V\nUSER $V\nUSER ${W:-none}\n",
        &[("V", "2"), ("W", "x")],
    )
    .unwrap();
    let words: Vec<String> = got[0].iter().map(word_of).collect();
    assert_eq!(words, vec!["img:2 None", "V=Some(\"2\")", "2", "none"]);
}

#[test]
fn expansion_errors_name_the_place() {
    let e = expand_all("FROM x\n\n  WORKDIR ${A:?needs A}\n", &[]).unwrap_err();
    assert_eq!(e, "Dockerfile:3:3: expanding \"${A:?needs A}\": A: needs A");
    let e = expand_all("ARG X='unterminated\nFROM x\n", &[]);
    assert!(e.is_err());
}

#[test]
fn problems_are_invalid_input() {
    let e = dockerfile::parse("f", "FROM x\nFOO bar\n").unwrap_err();
    assert_eq!(e.problem, Problem::UnknownInstruction("FOO".into()));
    assert_eq!((e.line, e.column), (2, 1));
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let big = "#".repeat(dockerfile::MAX_BYTES + 1);
    let e = dockerfile::parse("f", &big).unwrap_err();
    assert!(matches!(e.problem, Problem::TooLarge { .. }));
}

const FRAGMENTS: &[&str] = &[
    "from",
    "NONE",
    "AS",
    "as",
    "x",
    "a=b",
    "a=\"b c\"",
    "'q'",
    "\"",
    "'",
    "\\",
    "`",
    "$A",
    "${A:-b}",
    "[\"a\"]",
    "[\"a\",",
    "[1]",
    "[]",
    "--from=a",
    "--chown=\"u g\"",
    "--link",
    "--link=false",
    "--exclude=*.md",
    "--parents",
    "--mount=type=cache,target=/c",
    "--network=none",
    "--platform=$BUILDPLATFORM",
    "--interval=5s",
    "--retries=3",
    "--bogus",
    "--",
    "<<EOF",
    "<<-EOF",
    "<<'EOF'",
    "3<<\"E\"",
    "cat",
    ">",
    "/dst/",
    "#",
    "# escape=`",
    "# syntax=x",
    "# check=skip=all",
    " ",
    " ",
    " ",
    "\t",
    "\n",
    "\n",
    "\n",
    "\\\n",
    "`\n",
    "EOF",
    "\tEOF",
    "é",
    "\r\n",
    "=",
    "-",
    "80/udp",
    "8000-8010",
];

const KEYWORDS: &[&str] = &[
    "RUN",
    "CMD",
    "ENTRYPOINT",
    "COPY",
    "ADD",
    "ENV",
    "ARG",
    "LABEL",
    "EXPOSE",
    "USER",
    "WORKDIR",
    "VOLUME",
    "SHELL",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "HEALTHCHECK CMD",
    "ONBUILD RUN",
    "MAINTAINER",
    "FROM x AS",
    "RUN <<EOF",
    "COPY <<-EOF /d",
];

/// Lines that start with a keyword, so that many of them parse.
fn generate_lines(rng: &mut Rng) -> String {
    let mut s = String::new();
    for _ in 0..rng.next() % 8 {
        s.push_str(rng.pick(KEYWORDS));
        for _ in 0..rng.next() % 5 {
            s.push(' ');
            s.push_str(rng.pick(FRAGMENTS));
        }
        s.push_str(rng.pick(&["\n", "\n", "\n", " \\\n", "\nEOF\n", "\n\tEOF\n"]));
    }
    s
}

fn generate(rng: &mut Rng) -> String {
    if rng.next() % 4 != 0 {
        return generate_lines(rng);
    }
    let mut s = String::new();
    let n = rng.next() % 40;
    for _ in 0..n {
        let list = if rng.next() % 4 == 0 {
            KEYWORDS
        } else {
            FRAGMENTS
        };
        s.push_str(rng.pick(list));
        if rng.next() % 3 == 0 {
            s.push(' ');
        }
    }
    s
}

/// Over generated inputs: no panic, and whatever parses prints to text that
/// parses to the same tree (the fuzz target's check, on stable).
#[test]
fn generated_parse_print_parse() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut parsed = 0;
    for i in 0..50_000 {
        let mut text = generate(&mut rng);
        if i % 2 == 0 {
            text = format!("FROM base\n{text}");
        }
        if let Ok(df) = dockerfile::parse("gen", &text) {
            parsed += 1;
            assert_print_stable(&df, &format!("{text:?}"));
            let inputs = inputs(&[]);
            if let Ok(ex) = Expander::new("gen", &df, &inputs) {
                for stage in &df.stages {
                    let _ = ex.stage(stage, BTreeMap::new());
                }
            }
        }
    }
    assert!(parsed > 4_000, "only {parsed} generated files parsed");
}

/// Bounded, linear work on large inputs: a quadratic walk over stages or
/// over ENV scopes would take minutes on these.
#[test]
fn many_stages_and_envs_are_linear() {
    let mut text = String::new();
    for i in 0..(dockerfile::MAX_INSTRUCTIONS / 2) {
        text.push_str(&format!("FROM base AS s{i}\nENV V{i}=$V{i}x\n"));
    }
    let df = dockerfile::parse("big", &text).unwrap();
    assert_eq!(df.stages.len(), dockerfile::MAX_INSTRUCTIONS / 2);
    text.push_str("FROM one-too-many\n");
    let e = dockerfile::parse("big", &text).unwrap_err();
    assert!(matches!(e.problem, Problem::TooLarge { .. }), "{e}");

    let mut envs = String::from("FROM base\n");
    for i in 0..50_000 {
        envs.push_str(&format!("ENV V{i}=$V0\n"));
    }
    let df = dockerfile::parse("envs", &envs).unwrap();
    let inputs = inputs(&[]);
    let ex = Expander::new("envs", &df, &inputs).unwrap();
    let mut scope = ex.stage_scope(BTreeMap::new());
    for ins in &df.stages[0].instructions {
        ex.step(&mut scope, ins).unwrap();
    }
    assert_eq!(scope.env.len(), 50_000);
}

#[test]
fn copy_heredocs_expand_unless_quoted_keeping_quotes() {
    let text = "FROM x\nENV U=me\nCOPY <<EOF <<'RAW' <<-TABS /d/\nhi \"$U\" '$U' ${U}\nEOF\n$U\nRAW\n\t\t$U\n\tTABS\nRUN <<EOF\necho $U\nEOF\n";
    let got = expand_all(text, &[]).unwrap();
    let Command::Copy(c) = &got[0][2] else {
        panic!("{:?}", got[0][2]);
    };
    let bodies: Vec<&str> = c.heredocs.iter().map(|h| h.content.as_str()).collect();
    assert_eq!(bodies, vec!["hi \"me\" '$U' me\n", "$U\n", "me\n"]);
    // RUN heredocs are left to the shell.
    let Command::Run(r) = &got[0][3] else {
        panic!("{:?}", got[0][3]);
    };
    assert_eq!(r.heredocs[0].content, "echo $U\n");
}

/// One word may grow to `MAX_EXPANDED` from a few bytes; an instruction of
/// many such words is bounded too, in all, so an 8 MiB Dockerfile cannot
/// ask for terabytes: `COPY $A $A ... /d` fails once its words pass the
/// bound, naming the word that did, and one such word alone is fine.
#[test]
fn an_instruction_expands_to_at_most_max_expanded_in_all() {
    let half = dockerfile::MAX_EXPANDED / 2 + 1;
    let base = format!("FROM x\nENV A={}\n", "a".repeat(half));
    let got = expand_all(&format!("{base}COPY $A /d\n"), &[]).unwrap();
    let Command::Copy(c) = &got[0][2] else {
        panic!("not a COPY: {}", got[0][2].keyword());
    };
    assert_eq!(c.sources[0].len(), half);

    for line in [
        "COPY $A $A /d",
        "LABEL a=$A b=$A",
        "COPY <<EOF /d\n$A\n$A\nEOF",
        "COPY <<EOF <<EOG /d\n$A\nEOF\n$A\nEOG",
    ] {
        let err = expand_all(&format!("{base}{line}\n"), &[]).unwrap_err();
        assert!(
            err.starts_with("Dockerfile:3:1: ")
                && err.contains(&dockerfile::MAX_EXPANDED.to_string()),
            "{line}: {err}"
        );
    }
    // Many words, each small, the sum past the bound.
    let many = format!(
        "FROM x\nENV A={}\nCOPY {} /d\n",
        "a".repeat(1000),
        "$A ".repeat(1100)
    );
    let err = expand_all(&many, &[]).unwrap_err();
    assert!(err.contains(&dockerfile::MAX_EXPANDED.to_string()), "{err}");
}

/// What a scope holds is bounded in all, not only each instruction: ENVs
/// and ARGs copying a value of half `MAX_EXPANDED` under new names held
/// half a MiB more per line, terabytes from an 8 MiB Dockerfile (and the
/// global ARGs, one line of them, had no bound at all). Past
/// `MAX_SCOPE_BYTES` the instruction fails naming its place; replacing one
/// name does not add up, however often.
#[test]
fn the_variables_in_a_scope_are_bounded_in_all() {
    use dockerfile::MAX_SCOPE_BYTES;
    let half = "a".repeat(dockerfile::MAX_EXPANDED / 2);
    let copies = MAX_SCOPE_BYTES / half.len() + 1;
    let lines = |keyword: &str| -> String {
        (0..copies)
            .map(|i| format!("{keyword} C{i}=$A\n"))
            .collect()
    };
    let one_line: String = (0..copies).map(|i| format!(" C{i}=$A")).collect();
    for (what, text) in [
        (
            "stage ENV",
            format!("FROM x\nENV A={half}\n{}", lines("ENV")),
        ),
        (
            "stage ARG",
            format!("FROM x\nARG A={half}\n{}", lines("ARG")),
        ),
        (
            "global ARGs",
            format!("ARG A={half}\n{}FROM x\n", lines("ARG")),
        ),
        (
            "global ARG line",
            format!("ARG A={half}{one_line}\nFROM x\n"),
        ),
    ] {
        let e = expand_all(&text, &[]).expect_err(what);
        assert!(e.contains(&MAX_SCOPE_BYTES.to_string()), "{what}: {e}");
    }
    // One name replaced again and again stays one value.
    let same = format!(
        "FROM x\nENV A={half}\n{}",
        "ENV A=${A}\nARG B=$A\n".repeat(copies)
    );
    expand_all(&same, &[]).expect("replacing");
}

/// The work of pattern substitutions (`${A#p}`, `${A%p}`, `${A/p/r}`) is
/// bounded for the whole Dockerfile, not per substitution: each word here
/// takes tens of millions of automaton steps (a long value, a pattern that
/// never matches it and keeps every state alive) and expands to nothing,
/// so a few hundred bytes each asked for hours from an 8 MiB Dockerfile
/// (`#` and `%` had no bound at all, `/` one per substitution). Past
/// `MAX_PATTERN_STEPS` in all, the expansion fails as too complex; one
/// such word is fine.
#[test]
fn pattern_work_is_bounded_for_the_whole_dockerfile() {
    use dockerfile::MAX_PATTERN_STEPS;
    let suffix = format!("{}b", "*a".repeat(100));
    let prefix = format!("b{}", "*a".repeat(100));
    // (operator, value length, pattern, steps per word: the value's
    // characters times the automaton's states, or, for `/`, each start's
    // rest of the value times them)
    let cases = [
        ("#", 200_000, &suffix, 200_000 * 202),
        ("##", 200_000, &suffix, 200_000 * 202),
        ("%", 200_000, &prefix, 200_000 * 202),
        ("%%", 200_000, &prefix, 200_000 * 202),
        ("/", 5_000, &"*b".to_owned(), 5_000 * 5_000 / 2 * 3),
        ("//", 5_000, &"*b".to_owned(), 5_000 * 5_000 / 2 * 3),
    ];
    let mut many = String::from("FROM x\n");
    let mut spent = 0;
    for (op, len, pattern, per_word) in cases {
        let value = "a".repeat(len);
        let word = format!("${{UNSET:+${{A{op}{pattern}}}}}");
        let one = format!("FROM x\nENV A={value}\nENV B={word}\n");
        let got = expand_all(&one, &[]).expect("one word");
        assert_eq!(
            got[0][2],
            Command::Env(vec![image_build::dockerfile::KeyValue {
                key: "B".into(),
                value: String::new()
            }]),
            "{op}"
        );
        // Every operator once in one Dockerfile: past the bound only when
        // each one's work counts.
        many.push_str(&format!("ENV A={value}\nENV B={word}\n"));
        spent += per_word;
    }
    assert!(spent > MAX_PATTERN_STEPS);
    let Err(e) = expand_all(&many, &[]) else {
        panic!("{spent} steps' worth expanded");
    };
    assert!(
        e.contains(&MAX_PATTERN_STEPS.to_string()),
        "{}",
        &e[..e.len().min(300)]
    );
}

/// A bad `RUN --mount` says its cause once: the problem names the flag and
/// its source what is wrong with it, so both the problem's chain and the
/// error's (the place, then the problem) carry each message once, and the
/// cause is reachable by `source()`.
#[test]
fn a_bad_mount_flag_says_its_cause_once() {
    let text = "FROM scratch\nRUN --mount=type=nope,target=/x true\n";
    let e = dockerfile::parse("Dockerfile", text).unwrap_err();
    assert!(matches!(e.problem, Problem::Mount { .. }), "{e:?}");
    image_testsupport::chain::assert_said_once(&e.problem);
    image_testsupport::chain::assert_said_once(&e);
    let chain = image_core::error::Chain(&e).to_string();
    assert_eq!(
        chain,
        "Dockerfile:2:1: --mount=type=nope,target=/x: unknown mount type \"nope\"",
    );
    assert!(std::error::Error::source(&e).is_some(), "{e:?}");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}
