//! `provenant keys generate`: a new cosign key pair, written as files or as the Kubernetes
//! Secret the controller reads (docs/signing.md).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

use super::SigningError;
use super::keys::{SECRET_PASSWORD, SECRET_PRIVATE_KEY, SECRET_PUBLIC_KEY, generate};

/// File names in `--output-dir`, the same as cosign's and as the Secret's keys.
const PRIVATE_KEY_FILE: &str = SECRET_PRIVATE_KEY;
const PUBLIC_KEY_FILE: &str = SECRET_PUBLIC_KEY;
const PASSWORD_FILE: &str = SECRET_PASSWORD;

/// Where the new key pair goes.
#[derive(Debug, Clone)]
pub enum Destination {
    /// `cosign.key` (0600), `cosign.pub` and, for a generated password, `cosign.password` (0600).
    Directory { path: PathBuf, force: bool },
    /// A Secret manifest on stdout with `cosign.key`, `cosign.password`, `cosign.pub`.
    Secret {
        name: String,
        namespace: Option<String>,
    },
}

/// The password that encrypts the private key, and where it came from.
pub struct Password {
    bytes: Vec<u8>,
    origin: PasswordOrigin,
}

/// Where a [`Password`] came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordOrigin {
    /// Read from this environment variable.
    Environment(String),
    /// Generated because this environment variable was unset.
    Generated(String),
}

impl Password {
    /// A password read from `variable`.
    pub fn from_value(variable: &str, bytes: Vec<u8>) -> Self {
        Password {
            bytes,
            origin: PasswordOrigin::Environment(variable.to_string()),
        }
    }

    /// 32 random bytes as URL-safe base64 (43 characters, no padding): printable, so it can
    /// be pasted into `COSIGN_PASSWORD`.
    pub fn generated(unset_variable: &str) -> Self {
        let bytes: [u8; 32] = rand::random();
        Password {
            bytes: URL_SAFE_NO_PAD.encode(bytes).into_bytes(),
            origin: PasswordOrigin::Generated(unset_variable.to_string()),
        }
    }

    /// The password in `variable` (cosign's `COSIGN_PASSWORD` by default), or a generated one
    /// when it is unset. A set but empty variable means an empty password, as with cosign.
    pub fn from_env(variable: &str) -> Self {
        match std::env::var_os(variable) {
            Some(value) => Self::from_value(variable, os_string_bytes(value)),
            None => Self::generated(variable),
        }
    }

    pub fn origin(&self) -> &PasswordOrigin {
        &self.origin
    }
}

#[cfg(unix)]
fn os_string_bytes(value: std::ffi::OsString) -> Vec<u8> {
    std::os::unix::ffi::OsStringExt::into_vec(value)
}

#[cfg(not(unix))]
fn os_string_bytes(value: std::ffi::OsString) -> Vec<u8> {
    value.to_string_lossy().into_owned().into_bytes()
}

/// Why `keys generate` failed: all are usage or I/O errors (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum KeygenError {
    #[error(transparent)]
    Signing(#[from] SigningError),
    #[error("refusing to overwrite {} (pass --force to replace them)", display_paths(.0))]
    Exists(Vec<PathBuf>),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid Secret {what} {value:?}: {reason}")]
    InvalidName {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("cannot render the Secret manifest as YAML: {0}")]
    Yaml(String),
    #[error("cannot write the output: {0}")]
    Output(#[source] std::io::Error),
}

fn display_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Generate a key pair and write it to `destination`; progress and the key id go to `stderr`,
/// the Secret manifest to `stdout`. Returns the key id.
pub fn run(
    destination: &Destination,
    password: &Password,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> Result<String, KeygenError> {
    // Check names and files before the (slow) key generation.
    match destination {
        Destination::Directory { path, force } => {
            if !force {
                refuse_existing(path, password)?;
            }
        }
        Destination::Secret { name, namespace } => {
            check_dns_subdomain("name", name)?;
            if let Some(namespace) = namespace {
                check_dns_label("namespace", namespace)?;
            }
        }
    }
    let keys = generate(&password.bytes)?;
    match destination {
        Destination::Directory { path, force } => {
            let private_path = path.join(PRIVATE_KEY_FILE);
            let public_path = path.join(PUBLIC_KEY_FILE);
            std::fs::create_dir_all(path).map_err(|source| KeygenError::Write {
                path: path.clone(),
                source,
            })?;
            write_file(&private_path, keys.private_pem.as_bytes(), 0o600, *force)?;
            write_file(&public_path, keys.public_pem.as_bytes(), 0o644, *force)?;
            let mut note = format!(
                "wrote {} (mode 0600) and {}\n",
                private_path.display(),
                public_path.display()
            );
            let password_path = path.join(PASSWORD_FILE);
            match &password.origin {
                PasswordOrigin::Generated(variable) => {
                    write_file(&password_path, &password.bytes, 0o600, *force)?;
                    note.push_str(&format!(
                        "{variable} is unset: generated a random password and wrote it to {} (mode 0600); cosign needs it as {variable}\n",
                        password_path.display()
                    ));
                }
                PasswordOrigin::Environment(variable) => {
                    // Left from an earlier pair: it does not open this key.
                    if password_path.symlink_metadata().is_ok() {
                        note.push_str(&format!(
                            "warning: {} is from an earlier key; this key's password is the one in {variable}\n",
                            password_path.display()
                        ));
                    }
                }
            }
            stderr
                .write_all(note.as_bytes())
                .map_err(KeygenError::Output)?;
        }
        Destination::Secret { name, namespace } => {
            let manifest = secret_manifest(
                name,
                namespace.as_deref(),
                &keys.private_pem,
                &password.bytes,
                &keys.public_pem,
            )?;
            stdout
                .write_all(manifest.as_bytes())
                .map_err(KeygenError::Output)?;
            let password_note = match &password.origin {
                PasswordOrigin::Generated(variable) => {
                    format!(" ({variable} is unset: the password is random and only in the Secret)")
                }
                PasswordOrigin::Environment(variable) => format!(" (password from {variable})"),
            };
            let target = match namespace {
                Some(namespace) => format!("{namespace}/{name}"),
                None => name.clone(),
            };
            writeln!(
                stderr,
                "printed Secret {target} with {SECRET_PRIVATE_KEY}, {SECRET_PASSWORD}, {SECRET_PUBLIC_KEY}{password_note}"
            )
            .map_err(KeygenError::Output)?;
        }
    }
    if password.bytes.is_empty() {
        writeln!(
            stderr,
            "warning: the private key is encrypted with an empty password"
        )
        .map_err(KeygenError::Output)?;
    }
    writeln!(stderr, "key id: {}", keys.key_id).map_err(KeygenError::Output)?;
    Ok(keys.key_id)
}

fn refuse_existing(dir: &Path, password: &Password) -> Result<(), KeygenError> {
    let mut names = vec![PRIVATE_KEY_FILE, PUBLIC_KEY_FILE];
    if matches!(password.origin, PasswordOrigin::Generated(_)) {
        names.push(PASSWORD_FILE);
    }
    let existing: Vec<PathBuf> = names
        .into_iter()
        .map(|name| dir.join(name))
        .filter(|path| path.symlink_metadata().is_ok())
        .collect();
    if existing.is_empty() {
        Ok(())
    } else {
        Err(KeygenError::Exists(existing))
    }
}

/// Create `path` with `mode` from the start (a secret is never readable by others, not even
/// briefly). With `replace`, an existing file is removed first so that its mode does not carry
/// over; without, an existing file fails (also closing the race with the earlier check).
fn write_file(path: &Path, contents: &[u8], mode: u32, replace: bool) -> Result<(), KeygenError> {
    let failed = |source| KeygenError::Write {
        path: path.to_path_buf(),
        source,
    };
    if replace {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(failed(e)),
        }
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            KeygenError::Exists(vec![path.to_path_buf()])
        } else {
            failed(e)
        }
    })?;
    file.write_all(contents).map_err(failed)?;
    file.sync_all().map_err(failed)
}

/// The Secret as YAML, fields in the order kubectl shows them.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct SecretManifest<'a> {
    api_version: &'a str,
    kind: &'a str,
    metadata: SecretMetadata<'a>,
    #[serde(rename = "type")]
    type_: &'a str,
    /// Standard base64, as the API wants `data`.
    data: BTreeMap<&'a str, String>,
}

#[derive(serde::Serialize)]
struct SecretMetadata<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<&'a str>,
}

fn secret_manifest(
    name: &str,
    namespace: Option<&str>,
    private_pem: &str,
    password: &[u8],
    public_pem: &str,
) -> Result<String, KeygenError> {
    let manifest = SecretManifest {
        api_version: "v1",
        kind: "Secret",
        metadata: SecretMetadata { name, namespace },
        type_: "Opaque",
        data: BTreeMap::from([
            (SECRET_PRIVATE_KEY, STANDARD.encode(private_pem)),
            (SECRET_PASSWORD, STANDARD.encode(password)),
            (SECRET_PUBLIC_KEY, STANDARD.encode(public_pem)),
        ]),
    };
    // Plain scalars: the default folds long base64 values into `>-` blocks, valid but unusual.
    let mut options = serde_saphyr::SerializerOptions::default();
    options.prefer_block_scalars = false;
    serde_saphyr::to_string_with_options(&manifest, options)
        .map_err(|e| KeygenError::Yaml(e.to_string()))
}

/// RFC 1123 subdomain, as Kubernetes requires of Secret names.
fn check_dns_subdomain(what: &'static str, value: &str) -> Result<(), KeygenError> {
    let invalid = |reason| KeygenError::InvalidName {
        what,
        value: value.to_string(),
        reason,
    };
    if value.is_empty() || value.len() > 253 {
        return Err(invalid("must be 1 to 253 characters"));
    }
    for part in value.split('.') {
        check_dns_label_chars(part).map_err(invalid)?;
    }
    Ok(())
}

/// RFC 1123 label, as Kubernetes requires of namespaces.
fn check_dns_label(what: &'static str, value: &str) -> Result<(), KeygenError> {
    let invalid = |reason| KeygenError::InvalidName {
        what,
        value: value.to_string(),
        reason,
    };
    if value.is_empty() || value.len() > 63 {
        return Err(invalid("must be 1 to 63 characters"));
    }
    check_dns_label_chars(value).map_err(invalid)
}

fn check_dns_label_chars(label: &str) -> Result<(), &'static str> {
    const RULE: &str =
        "lowercase letters, digits, '-' and '.', starting and ending with a letter or digit";
    let alphanumeric = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let starts_and_ends_ok = label.starts_with(alphanumeric) && label.ends_with(alphanumeric);
    if starts_and_ends_ok && label.chars().all(|c| alphanumeric(c) || c == '-') {
        Ok(())
    } else {
        Err(RULE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_password_is_43_url_safe_characters() {
        let password = Password::generated("COSIGN_PASSWORD");
        assert_eq!(password.bytes.len(), 43);
        assert!(
            password
                .bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        );
        assert_ne!(
            Password::generated("X").bytes,
            Password::generated("X").bytes
        );
    }

    #[test]
    fn secret_names_are_checked_before_generating() {
        let password = Password::from_value("P", b"pw".to_vec());
        for (name, namespace) in [
            ("Bad_Name", None),
            ("-x", None),
            ("", None),
            ("ok", Some("a.b")),
        ] {
            let destination = Destination::Secret {
                name: name.to_string(),
                namespace: namespace.map(str::to_string),
            };
            let err = run(&destination, &password, &mut Vec::new(), &mut Vec::new())
                .expect_err("invalid name");
            assert!(matches!(err, KeygenError::InvalidName { .. }), "{err}");
        }
        assert!(check_dns_subdomain("name", "provenant-signing.v1").is_ok());
    }

    #[test]
    fn secret_manifest_has_the_three_keys_in_base64() {
        let yaml = secret_manifest("signing", Some("provenant-system"), "PRIV", b"pw", "PUB")
            .expect("yaml");
        let value: serde_json::Value = serde_saphyr::from_str(&yaml).expect("parses");
        assert_eq!(value["apiVersion"], "v1");
        assert_eq!(value["kind"], "Secret");
        assert_eq!(value["type"], "Opaque");
        assert_eq!(value["metadata"]["name"], "signing");
        assert_eq!(value["metadata"]["namespace"], "provenant-system");
        assert_eq!(value["data"]["cosign.key"], "UFJJVg==");
        assert_eq!(value["data"]["cosign.password"], "cHc=");
        assert_eq!(value["data"]["cosign.pub"], "UFVC");
        assert!(yaml.starts_with("apiVersion: v1\nkind: Secret\n"), "{yaml}");
        let long = secret_manifest("s", None, &"A".repeat(300), b"", "PUB").expect("yaml");
        assert!(!long.contains(">-"), "{long}");
    }
}
