//! Compiles the project's own C sources (`../src/*.c`, `../malloc/*.c`,
//! headers in `../include`) freestanding with the C compiler the `cc` crate
//! would pick, and links them statically as `libkbuddy.a`. No registry
//! crates: the compiler, flags and archiver are found here by hand.
//!
//! Compiler: `CC_<target>` (either spelling), then `TARGET_CC` (cross
//! builds) or `HOST_CC` (native), then `CC`, then `cc` natively or
//! `<arch>-unknown-elf-gcc` for bare-metal RISC-V. Flags are added from
//! `CFLAGS_<target>`, `TARGET_CFLAGS` and `CFLAGS` the same way; the
//! archiver comes from `AR_<target>`, `TARGET_AR` and `AR`, else from the
//! compiler's name (`riscv64-unknown-elf-gcc` -> `riscv64-unknown-elf-ar`),
//! else `ar`. `KBUDDY_SOURCE_DIR` overrides where the C sources are (the
//! parent of this package by default).

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn var(name: &str) -> Option<String> {
    println!("cargo:rerun-if-env-changed={name}");
    env::var(name).ok().filter(|v| !v.is_empty())
}

/// The `cc` crate's lookup order for a tool variable such as `CC`.
fn tool_var(base: &str, target: &str, host: &str) -> Option<String> {
    let kind = if target == host { "HOST" } else { "TARGET" };
    var(&format!("{base}_{target}"))
        .or_else(|| var(&format!("{base}_{}", target.replace('-', "_"))))
        .or_else(|| var(&format!("{kind}_{base}")))
        .or_else(|| var(base))
}

fn c_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("kbuddy: cannot read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|x| x.to_str()), Some("c")))
        .collect();
    files.sort();
    files
}

fn run(cmd: &mut Command) {
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("kbuddy: cannot run {cmd:?}: {e}"));
    assert!(status.success(), "kbuddy: {cmd:?} failed ({status})");
}

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = var("KBUDDY_SOURCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join(".."));
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let target = env::var("TARGET").unwrap();
    let host = env::var("HOST").unwrap();
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();

    // The crate builds with Rust 1.63 (Debian 12's); a few things need
    // newer compilers. core::error::Error is stable from 1.81.
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let minor = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|v| v.split('.').nth(1).and_then(|m| m.parse::<u32>().ok()))
        .unwrap_or(0);
    if minor >= 80 {
        // Declared for the unexpected_cfgs lint (older cargo warns on it).
        println!("cargo:rustc-check-cfg=cfg(kbuddy_core_error)");
        println!("cargo:rustc-check-cfg=cfg(kbuddy_const_mut_refs)");
    }
    // A const fn may take a fn(&mut T) from Rust 1.83.
    if minor >= 83 {
        println!("cargo:rustc-cfg=kbuddy_const_mut_refs");
    }
    if minor >= 81 {
        println!("cargo:rustc-cfg=kbuddy_core_error");
    }

    for d in ["include", "src", "malloc"] {
        println!("cargo:rerun-if-changed={}", root.join(d).display());
    }

    let default_cc = if target != host && os == "none" && arch.starts_with("riscv") {
        format!("{arch}-unknown-elf-gcc")
    } else {
        "cc".to_string()
    };
    let cc = tool_var("CC", &target, &host).unwrap_or(default_cc);

    let mut flags: Vec<String> = vec![
        "-std=c11".into(),
        "-ffreestanding".into(),
        "-Wall".into(),
        "-Wextra".into(),
        "-ffunction-sections".into(),
        "-fdata-sections".into(),
    ];
    let opt = match env::var("OPT_LEVEL").as_deref() {
        Ok("0") => "-O0",
        Ok("1") => "-O1",
        Ok("2") => "-O2",
        Ok("s") | Ok("z") => "-Os",
        _ => "-O3",
    };
    flags.push(opt.into());
    if matches!(env::var("DEBUG").as_deref(), Ok(d) if d != "false" && d != "0") {
        flags.push("-g".into());
    }
    if os == "none" {
        // A kernel: no stack-protector runtime, no red zone for interrupts.
        flags.push("-fno-stack-protector".into());
        match target.as_str() {
            t if t.starts_with("riscv64gc") => {
                flags.extend(["-march=rv64gc", "-mabi=lp64d", "-mcmodel=medany"].map(String::from))
            }
            t if t.starts_with("riscv64imac") => {
                flags.extend(["-march=rv64imac", "-mabi=lp64", "-mcmodel=medany"].map(String::from))
            }
            t if t.starts_with("riscv32imac") => {
                flags.extend(["-march=rv32imac", "-mabi=ilp32"].map(String::from))
            }
            t if t.starts_with("x86_64") => flags.extend(
                ["-mno-red-zone", "-mgeneral-regs-only", "-fPIC"].map(String::from),
            ),
            t if t.starts_with("aarch64") => flags.push("-mgeneral-regs-only".into()),
            _ => {}
        }
    } else {
        // Rust executables are position independent by default.
        flags.push("-fPIC".into());
    }
    if let Some(extra) = tool_var("CFLAGS", &target, &host) {
        flags.extend(extra.split_whitespace().map(String::from));
    }
    // The heap's granule is a compile-time choice of the C (32 bytes, or
    // 16 with -DKBUDDY_MIN_BLOCK_SHIFT=4); the crate's MIN_BLOCK follows it.
    if minor >= 80 {
        println!("cargo:rustc-check-cfg=cfg(kbuddy_min_block_16)");
    }
    if flags.iter().any(|f| f.ends_with("KBUDDY_MIN_BLOCK_SHIFT=4")) {
        println!("cargo:rustc-cfg=kbuddy_min_block_16");
    }

    // layout.c: sizes and offsets of the C structs the crate mirrors, so
    // that a test can prove the hand-written declarations match (an object
    // of its own: nothing links it unless that test refers to it).
    let layout = out.join("kbuddy_rs_layout.c");
    fs::write(
        &layout,
        "#include <stddef.h>\n#include \"kbuddy.h\"\n#include \"kbuddy_malloc.h\"\n\
         const size_t kbuddy_rs_layout[] = {\n\
         sizeof(kbuddy_heap), _Alignof(kbuddy_heap), offsetof(kbuddy_heap, orders_free),\n\
         offsetof(kbuddy_heap, oom), offsetof(kbuddy_heap, lock),\n\
         sizeof(kbuddy_frames), _Alignof(kbuddy_frames), offsetof(kbuddy_frames, used),\n\
         offsetof(kbuddy_frames, lock), sizeof(kbuddy_stats), sizeof(kbuddy_frame_stats),\n\
         sizeof(kbuddy_malloc_hooks), offsetof(kbuddy_malloc_hooks, lock),\n\
         offsetof(kbuddy_malloc_hooks, grow_zeroed), offsetof(kbuddy_malloc_hooks, bad_free),\n\
         offsetof(kbuddy_malloc_hooks, cpu_id_unmasked),\n\
         sizeof(kbuddy_malloc_stats), offsetof(kbuddy_malloc_stats, bad_frees),\n\
         KBUDDY_MIN_BLOCK, KBUDDY_MALLOC_MAX_CPUS, KBUDDY_MALLOC_CACHE_MAX,\n\
         sizeof(kbuddy_status)};\n",
    )
    .unwrap();

    let mut sources = c_files(&root.join("src"));
    sources.extend(c_files(&root.join("malloc")));
    assert!(
        sources.iter().any(|p| p.ends_with("heap.c")),
        "kbuddy: no C sources under {} (set KBUDDY_SOURCE_DIR)",
        root.display()
    );
    sources.push(layout);

    let mut objects = Vec::new();
    for (i, src) in sources.iter().enumerate() {
        let stem = src.file_stem().unwrap().to_string_lossy();
        let dir = src.parent().and_then(|d| d.file_name()).unwrap().to_string_lossy();
        let obj = out.join(format!("{i:02}-{dir}-{stem}.o"));
        run(Command::new(&cc)
            .args(&flags)
            .arg("-I")
            .arg(root.join("include"))
            .arg("-c")
            .arg(src)
            .arg("-o")
            .arg(&obj));
        objects.push(obj);
    }

    let ar = tool_var("AR", &target, &host).unwrap_or_else(|| {
        let name = Path::new(&cc).file_name().unwrap().to_string_lossy().into_owned();
        match name.strip_suffix("gcc") {
            Some(prefix) if !prefix.is_empty() => format!("{prefix}ar"),
            _ => "ar".to_string(),
        }
    });
    let lib = out.join("libkbuddy.a");
    let _ = fs::remove_file(&lib);
    run(Command::new(&ar).arg("crs").arg(&lib).args(&objects));

    println!("cargo:rustc-link-search=native={}", out.display());
    println!("cargo:rustc-link-lib=static=kbuddy");
    println!("cargo:rerun-if-changed=build.rs");
}
