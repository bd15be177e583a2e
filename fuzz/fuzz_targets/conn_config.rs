//! Connection strings and config files: whatever the text, parsing returns Ok or Err, never
//! panics; and an error never echoes a password given in the string.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(e) = perfcopy::mssql::ConnSpec::target("--to", text) {
        let _ = e.to_string();
    }
    // The same text behind a Password= key must not come back in an error.
    let with_pw = format!("Server=tcp:h,1433;Database=d;User Id=u;Password={{{}}};{text}", "Fz9qX7secret");
    if let Err(e) = perfcopy::mssql::ConnSpec::target("--to", &with_pw) {
        assert!(!e.to_string().contains("Fz9qX7secret"), "password in error: {e}");
    }
    let _ = toml::from_str::<perfcopy::config::ConfigFile>(text);
    // read_config also resolves relative paths against the file's directory.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, data).unwrap();
    let _ = perfcopy::config::read_config(&path);
});
