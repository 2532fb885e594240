//! Seeded mutation fuzzing of the NNet reader through the C ABI (deterministic: the same files
//! every run). Every file must give VRAM_OK, VRAM_ERR_INVALID_ARGUMENT or
//! VRAM_ERR_OUT_OF_MEMORY — never a panic or an abort — and leave the context's usage at zero
//! once the model (if any) is freed. Mutations the format does not allow (a missing or extra
//! line or value, trailing data, NaN or infinities, lying counts) must be refused; ones it
//! allows (CRLF line ends) must load.
//!
//! `VRAM_FUZZ_NNET` sets the number of files (default 10 000); longer runs: fuzz/ (cargo fuzz).

mod common;

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::ptr;

use common::*;
use vram::*;

/// A valid NNet text of random small sizes.
fn valid_net(rng: &mut Rng) -> String {
    let layers = 1 + rng.index(4);
    let sizes: Vec<usize> = (0..=layers).map(|_| 1 + rng.index(6)).collect();
    let inputs = sizes[0];
    let mut t = String::from("// fuzz base\n");
    t += &format!(
        "{layers},{inputs},{},{},\n",
        sizes[layers],
        sizes.iter().max().unwrap()
    );
    t += &sizes.iter().map(|s| format!("{s},")).collect::<String>();
    t += "\n0,\n";
    let row = |n: usize, f: &mut dyn FnMut() -> f64| -> String {
        (0..n).map(|_| format!("{},", f())).collect::<String>() + "\n"
    };
    let mut val = || (rng.index(2001) as f64 - 1000.0) / 250.0;
    t += &row(inputs, &mut || -1.0);
    t += &row(inputs, &mut || 1.0);
    t += &row(inputs + 1, &mut || 0.0);
    t += &row(inputs + 1, &mut || 1.0);
    for l in 0..layers {
        for _ in 0..sizes[l + 1] {
            t += &row(sizes[l], &mut val);
        }
        for _ in 0..sizes[l + 1] {
            t += &row(1, &mut val);
        }
    }
    t
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    Ok,
    Refused,
    Either,
}

/// Line indices holding data (not comments).
fn data_lines(text: &str) -> Vec<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.starts_with("//") && !l.trim().is_empty())
        .map(|(i, _)| i)
        .collect()
}

fn with_lines(text: &str, f: impl FnOnce(&mut Vec<String>)) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    f(&mut lines);
    lines.join("\n") + "\n"
}

fn mutate(base: &str, rng: &mut Rng) -> (String, Expect, &'static str) {
    let data = data_lines(base);
    let pick = data[rng.index(data.len())];
    match rng.index(11) {
        0 => (base.to_string(), Expect::Ok, "unchanged"),
        1 => (base.replace('\n', "\r\n"), Expect::Ok, "CRLF"),
        2 => (
            with_lines(base, |l| {
                l.remove(pick);
            }),
            Expect::Refused,
            "missing line",
        ),
        3 => (
            with_lines(base, |l| {
                let dup = l[pick].clone();
                l.insert(pick, dup);
            }),
            Expect::Refused,
            "duplicated line",
        ),
        4 => (
            with_lines(base, |l| l[pick].push_str("0.5,")),
            Expect::Refused,
            "extra value",
        ),
        5 => {
            let junk = ["garbage", "1,2,3,", "// late comment", "0"][rng.index(4)];
            (format!("{base}{junk}\n"), Expect::Refused, "trailing data")
        }
        6 => {
            let bad = ["nan", "inf", "-inf", "NaN", "1e999", "0x10", "", "1..2"][rng.index(8)];
            (
                with_lines(base, |l| {
                    let mut vals: Vec<String> = l[pick]
                        .trim_end_matches(',')
                        .split(',')
                        .map(str::to_string)
                        .collect();
                    let k = rng.index(vals.len());
                    vals[k] = bad.to_string();
                    l[pick] = vals.join(",") + ",";
                }),
                Expect::Refused,
                "non-finite or malformed value",
            )
        }
        7 => {
            let huge = [
                "0",
                "-1",
                "1e7",
                "10000000",
                "4294967296",
                "18446744073709551616",
                "1.5",
                "nan",
                "99999999999",
            ];
            let field = rng.index(4);
            (
                with_lines(base, |l| {
                    let h = data[0];
                    let mut vals: Vec<String> = l[h]
                        .trim_end_matches(',')
                        .split(',')
                        .map(str::to_string)
                        .collect();
                    // A value equal to the original would not be a lie: make sure it differs.
                    let v = huge[rng.index(huge.len())];
                    vals[field] = if vals[field] == v {
                        "0".into()
                    } else {
                        v.into()
                    };
                    l[h] = vals.join(",") + ",";
                }),
                Expect::Refused,
                "lying header count",
            )
        }
        8 => {
            // Truncated at a line boundary before the last data line.
            let last = *data.last().unwrap();
            let keep = data[rng.index(data.len() - 1)];
            let _ = last;
            (
                with_lines(base, |l| l.truncate(keep + 1)),
                Expect::Refused,
                "truncated",
            )
        }
        9 => {
            // Random byte flips: anything may happen except a crash.
            let mut b = base.as_bytes().to_vec();
            for _ in 0..1 + rng.index(4) {
                let i = rng.index(b.len());
                b[i] ^= 1 << rng.index(8);
            }
            (
                String::from_utf8_lossy(&b).into_owned(),
                Expect::Either,
                "byte flips",
            )
        }
        _ => {
            // Truncated at a random byte.
            let cut = rng.index(base.len());
            (
                base[..cut].to_string(),
                Expect::Either,
                "truncated at a byte",
            )
        }
    }
}

fn load(ctx: &Ctx, path: &Path) -> (vram_status, String) {
    let p = CString::new(path.to_str().unwrap()).unwrap();
    let mut m = ptr::null_mut();
    let s = ibp_model_from_nnet(ctx.0, p.as_ptr(), &mut m);
    let msg = if s == vram_status::VRAM_OK {
        ibp_model_free(m);
        String::new()
    } else {
        assert!(m.is_null(), "model written on failure");
        last_error()
    };
    (s, msg)
}

fn acas_file() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data/acasxu/nnet/ACASXU_experimental_v2a_1_1.nnet");
    p.exists().then_some(p)
}

#[test]
fn mutated_nnet_files_never_crash_and_invalid_ones_are_refused() {
    let files: usize = std::env::var("VRAM_FUZZ_NNET")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let ctx = Ctx::new();
    let dir = std::env::temp_dir().join(format!("vram-fuzz-nnet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("f.nnet");
    let acas = acas_file().map(|p| std::fs::read_to_string(p).unwrap());
    if acas.is_none() {
        println!("NOTE: ../shared/data/acasxu is absent; fuzzing synthetic networks only");
    }
    let mut rng = Rng(0x005e_ed0f_7e57);
    let (mut ok, mut refused) = (0usize, 0usize);
    for i in 0..files {
        // One file in 50 starts from the real ACAS Xu network, the rest from small ones.
        let base = match &acas {
            Some(a) if i % 50 == 0 => a.clone(),
            _ => valid_net(&mut rng),
        };
        let (text, expect, what) = mutate(&base, &mut rng);
        std::fs::write(&path, &text).unwrap();
        let (s, msg) = load(&ctx, &path);
        match s {
            vram_status::VRAM_OK => ok += 1,
            vram_status::VRAM_ERR_INVALID_ARGUMENT | vram_status::VRAM_ERR_OUT_OF_MEMORY => {
                refused += 1;
                assert!(
                    msg.len() <= VRAM_MAX_ERROR_MESSAGE,
                    "file {i}: message too long"
                );
            }
            other => panic!("file {i} ({what}): {other:?}: {msg}"),
        }
        match expect {
            Expect::Ok => assert_eq!(s, vram_status::VRAM_OK, "file {i} ({what}) refused: {msg}"),
            Expect::Refused => assert_ne!(
                s,
                vram_status::VRAM_OK,
                "file {i} ({what}) was accepted:\n{text}"
            ),
            Expect::Either => {}
        }
        assert_eq!(ctx.used(), 0, "file {i} ({what}) left shards sealed");
    }
    println!("{files} mutated NNet files: {ok} loaded, {refused} refused, 0 crashes");
    std::fs::remove_dir_all(&dir).ok();
}
