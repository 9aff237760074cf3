//! Connection and subscription JWTs: verification (HS/RS/ES) and HS256 signing for `gentoken`.
//!
//! A [`TokenVerifier`] holds the decoding keys of one `TokenConfig` section. The header's `alg`
//! picks the key: HS* needs `hmac_secret_key`, RS* needs `rsa_public_key`, ES256/ES384 need an
//! `ecdsa_public_key` on the matching curve. Any other `alg` (`none`, PS*, EdDSA, …) is refused
//! before a signature is looked at, so a token can never choose how it is checked: an HS256
//! token "signed" with the RSA public key's PEM is refused when only RSA is configured, and
//! fails the signature check against the real HMAC secret when both are.
//!
//! Time claims are checked here against the caller's `now` with no leeway, so results are
//! deterministic: a token is valid while `now < exp` (and `nbf <= now` when `nbf` is present).

use std::borrow::Cow;
use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::crypto::CryptoProvider;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::config::TokenConfig;

/// Why a token was refused. `Expired` is error 109; everything else closes with 3500.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
}

fn invalid(reason: impl Into<String>) -> TokenError {
    TokenError::Invalid(reason.into())
}

/// Why the configured keys cannot be used (a bad PEM, say).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct KeyError {
    /// The config key at fault, e.g. `client.token.rsa_public_key`.
    pub key: String,
    pub reason: String,
}

/// Claims of a verified connection token.
#[derive(Debug, Default)]
pub struct ConnectClaims {
    /// `sub`; `""` for anonymous.
    pub user: String,
    /// When the connection expires (unix seconds): `expire_at` if set (0 = never), else `exp`.
    pub expires_at: Option<u64>,
    /// `info`, or `b64info` decoded; raw JSON for `conn_info`.
    pub info: Option<Box<RawValue>>,
    /// Server-side subscriptions: from `subs` (channel → `{info}`), else `channels`.
    /// Sorted by channel, each with its optional `info` (→ `chan_info`).
    pub subs: Vec<(String, Option<Box<RawValue>>)>,
}

/// A token override of one namespace flag: `{"value": true}`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Overrides {
    pub presence: Option<bool>,
    pub join_leave: Option<bool>,
    pub force_push_join_leave: Option<bool>,
}

/// Claims of a verified subscription token.
#[derive(Debug, Default)]
pub struct SubscribeClaims {
    /// `sub`: must equal the connection's user (checked by the caller).
    pub user: String,
    /// `channel`: must equal the subscribed channel (checked by the caller).
    pub channel: String,
    /// When the subscription expires (unix seconds): `expire_at` if set (0 = never), else `exp`.
    pub expires_at: Option<u64>,
    /// `info` or `b64info`: raw JSON for `chan_info`.
    pub info: Option<Box<RawValue>>,
    pub overrides: Overrides,
}

/// Verifies tokens with the keys of one `TokenConfig`. Built once at start-up (and on reload);
/// cheap to share (`Send + Sync`), and verification takes `&self`.
#[derive(Debug, Clone)]
pub struct TokenVerifier {
    hmac: Option<DecodingKey>,
    rsa: Option<DecodingKey>,
    /// The EC key and the one algorithm its curve signs: P-256 → ES256, P-384 → ES384.
    ec: Option<(DecodingKey, Algorithm)>,
    audience: Option<String>,
    issuer: Option<String>,
}

impl TokenVerifier {
    /// Builds a verifier; `prefix` names the config section in errors (`client.token`).
    ///
    /// Empty keys are "not configured". PEM keys are parsed and checked here, so a bad key is a
    /// start-up error naming it (`client.token.rsa_public_key: …`), never a per-token surprise.
    /// PEM text whose newlines were escaped as `\n` (common in env vars) is accepted.
    pub fn new(cfg: &TokenConfig, prefix: &str) -> Result<Self, KeyError> {
        let key_error = |field: &str| {
            let key = format!("{prefix}.{field}");
            move |reason: String| KeyError { key, reason }
        };
        let hmac = if cfg.hmac_secret_key.is_empty() {
            None
        } else {
            let key = DecodingKey::from_secret(cfg.hmac_secret_key.as_bytes())
                .map_err(|e| key_error("hmac_secret_key")(e.to_string()))?;
            Some(key)
        };
        let rsa = pem_text(&cfg.rsa_public_key)
            .map(|pem| rsa_key(&pem))
            .transpose()
            .map_err(key_error("rsa_public_key"))?;
        let ec = pem_text(&cfg.ecdsa_public_key)
            .map(|pem| ec_key(&pem))
            .transpose()
            .map_err(key_error("ecdsa_public_key"))?;
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Ok(TokenVerifier {
            hmac,
            rsa,
            ec,
            audience: non_empty(&cfg.audience),
            issuer: non_empty(&cfg.issuer),
        })
    }

    /// Whether any key is configured; without one every token is refused.
    pub fn has_keys(&self) -> bool {
        self.hmac.is_some() || self.rsa.is_some() || self.ec.is_some()
    }

    /// Verifies a connection token at time `now` (unix seconds).
    ///
    /// Checks, in order: shape and `alg` (a configured key must exist for it), signature,
    /// `aud`/`iss` when configured, `nbf`, `exp` and `expire_at` against `now`, then the claims.
    /// A `channel` claim (a subscription token used to connect) is `Invalid`. `b64info` wins
    /// over `info`; a non-empty `subs` wins over `channels`. Never panics on any input.
    pub fn verify_connect(&self, token: &str, now: u64) -> Result<ConnectClaims, TokenError> {
        let claims = self.verify(token, now)?;
        if claims.channel.is_some() {
            return Err(invalid(
                "a connection token must not have a channel claim (is it a subscription token?)",
            ));
        }
        let expires_at = claims.expiry(now)?;
        let info = decode_info(claims.info, claims.b64info.as_deref())?;
        let subs = match claims.subs {
            // A BTreeMap iterates in channel order: the sorted contract holds by construction.
            Some(subs) if !subs.is_empty() => subs
                .into_iter()
                .map(|(channel, opts)| {
                    Ok((channel, decode_info(opts.info, opts.b64info.as_deref())?))
                })
                .collect::<Result<Vec<_>, TokenError>>()?,
            _ => {
                let mut channels = claims.channels.unwrap_or_default();
                channels.sort_unstable();
                channels.dedup();
                channels.into_iter().map(|c| (c, None)).collect()
            }
        };
        Ok(ConnectClaims {
            user: claims.sub.unwrap_or_default(),
            expires_at,
            info,
            subs,
        })
    }

    /// Verifies a subscription token at time `now` (unix seconds).
    ///
    /// Same signature and time checks as [`verify_connect`](Self::verify_connect); `channel`
    /// must be a non-empty string. `override` entries other than `presence`, `join_leave` and
    /// `force_push_join_leave` are ignored.
    pub fn verify_subscribe(&self, token: &str, now: u64) -> Result<SubscribeClaims, TokenError> {
        let claims = self.verify(token, now)?;
        let channel = match &claims.channel {
            Some(serde_json::Value::String(ch)) if !ch.is_empty() => ch.clone(),
            Some(serde_json::Value::String(_)) | None => {
                return Err(invalid(
                    "a subscription token needs a non-empty channel claim",
                ));
            }
            Some(_) => return Err(invalid("the channel claim must be a string")),
        };
        let expires_at = claims.expiry(now)?;
        let info = decode_info(claims.info, claims.b64info.as_deref())?;
        let o = claims.overrides.unwrap_or_default();
        let flag = |v: Option<BoolValue>| v.map(|v| v.value);
        Ok(SubscribeClaims {
            user: claims.sub.unwrap_or_default(),
            channel,
            expires_at,
            info,
            overrides: Overrides {
                presence: flag(o.presence),
                join_leave: flag(o.join_leave),
                force_push_join_leave: flag(o.force_push_join_leave),
            },
        })
    }

    /// Signature, algorithm, audience, issuer and `nbf`; `exp` is left to [`Claims::expiry`].
    fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        let (alg, key) = self.key_for(token)?;
        let mut validation = Validation::new(alg);
        // Time and audience are checked below against the caller's `now`, without leeway.
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        let claims = jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map_err(decode_error)?
            .claims;
        if let Some(want) = &self.audience {
            let ok = match &claims.aud {
                Some(Audience::One(aud)) => aud == want,
                Some(Audience::Many(auds)) => auds.iter().any(|a| a == want),
                None => false,
            };
            if !ok {
                return Err(invalid(format!("audience (aud) is not {want:?}")));
            }
        }
        if let Some(want) = &self.issuer
            && claims.iss.as_deref() != Some(want.as_str())
        {
            return Err(invalid(format!("issuer (iss) is not {want:?}")));
        }
        if let Some(nbf) = seconds(claims.nbf.as_ref(), "nbf")?
            && now < nbf
        {
            return Err(invalid("token not valid yet (nbf)"));
        }
        Ok(claims)
    }

    /// Picks the key for the header's `alg`, refusing algorithms without a configured key.
    fn key_for(&self, token: &str) -> Result<(Algorithm, &DecodingKey), TokenError> {
        let mut parts = token.split('.');
        let (Some(header), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid(
                "malformed token: expected three dot-separated parts",
            ));
        };
        let header: RawHeader = URL_SAFE_NO_PAD
            .decode(header)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| invalid("malformed token header"))?;
        let (alg, family) = algorithm(&header.alg)?;
        let key = match family {
            Family::Hmac => self.hmac.as_ref(),
            Family::Rsa => self.rsa.as_ref(),
            Family::Ec => self
                .ec
                .as_ref()
                .filter(|(_, curve_alg)| *curve_alg == alg)
                .map(|(key, _)| key),
        };
        let key = key.ok_or_else(|| invalid(format!("no key configured for algorithm {alg:?}")))?;
        Ok((alg, key))
    }
}

/// Signs an HS256 connection token (for `rollcall gentoken` and tests). `claims` should be a
/// JSON object; the header is `{"typ":"JWT","alg":"HS256"}`. Never fails.
pub fn sign_hs256(secret: &str, claims: &serde_json::Value) -> String {
    // jsonwebtoken refuses an empty secret. HMAC zero-pads short keys to the block size
    // (RFC 2104), so "\0" is the very same key as "": the function stays total and correct.
    let secret = if secret.is_empty() {
        b"\0".as_slice()
    } else {
        secret.as_bytes()
    };
    let key = EncodingKey::from_secret(secret).expect("a non-empty HMAC secret is a valid key");
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key)
        .expect("HMAC-signing a serde_json::Value cannot fail")
}

/// Which configured key verifies an algorithm.
#[derive(Clone, Copy)]
enum Family {
    Hmac,
    Rsa,
    Ec,
}

/// The algorithms the spec allows; everything else (`none` included) is refused.
fn algorithm(name: &str) -> Result<(Algorithm, Family), TokenError> {
    Ok(match name {
        "HS256" => (Algorithm::HS256, Family::Hmac),
        "HS384" => (Algorithm::HS384, Family::Hmac),
        "HS512" => (Algorithm::HS512, Family::Hmac),
        "RS256" => (Algorithm::RS256, Family::Rsa),
        "RS384" => (Algorithm::RS384, Family::Rsa),
        "RS512" => (Algorithm::RS512, Family::Rsa),
        "ES256" => (Algorithm::ES256, Family::Ec),
        "ES384" => (Algorithm::ES384, Family::Ec),
        none if none.eq_ignore_ascii_case("none") => {
            return Err(invalid("unsigned tokens (alg none) are not accepted"));
        }
        other => return Err(invalid(format!("algorithm {other:?} is not supported"))),
    })
}

fn decode_error(e: jsonwebtoken::errors::Error) -> TokenError {
    invalid(match e.kind() {
        ErrorKind::InvalidSignature => "signature does not match".to_string(),
        ErrorKind::InvalidAlgorithm => "algorithm does not match the key".to_string(),
        ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
            "malformed token".to_string()
        }
        ErrorKind::Json(e) => format!("malformed claims: {e}"),
        _ => e.to_string(),
    })
}

/// The key PEM from config, or `None` when unset. Escaped `\n` become newlines.
fn pem_text(text: &str) -> Option<Cow<'_, str>> {
    let text = text.trim();
    if text.is_empty() {
        None
    } else if !text.contains('\n') && text.contains("\\n") {
        Some(Cow::Owned(text.replace("\\n", "\n")))
    } else {
        Some(Cow::Borrowed(text))
    }
}

fn reject_private_pem(pem: &str) -> Result<(), String> {
    if pem.contains("PRIVATE KEY-----") {
        return Err("this is a private key; configure the public key \
                    (openssl pkey -in key.pem -pubout)"
            .into());
    }
    Ok(())
}

fn provider() -> Result<&'static CryptoProvider, String> {
    CryptoProvider::try_get_default().ok_or_else(|| {
        "no JWT crypto provider (jsonwebtoken needs exactly one of rust_crypto, aws_lc_rs)".into()
    })
}

/// Parses and fully checks an RSA public key PEM (SPKI or PKCS#1).
fn rsa_key(pem: &str) -> Result<DecodingKey, String> {
    reject_private_pem(pem)?;
    let key = DecodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| {
        format!("not an RSA public key in PEM format: expected -----BEGIN PUBLIC KEY----- ({e})")
    })?;
    // `from_rsa_pem` only unwraps the PEM; parse the DER now so a corrupt key fails at start-up.
    let der = key.try_get_as_bytes().map_err(|e| e.to_string())?;
    (provider()?.key_utils.rsa_pub_components_from_public_key)(der)
        .map_err(|e| format!("not a valid RSA public key ({e})"))?;
    Ok(key)
}

/// Parses and fully checks an EC public key PEM; its curve decides the one algorithm it serves.
fn ec_key(pem: &str) -> Result<(DecodingKey, Algorithm), String> {
    reject_private_pem(pem)?;
    let key = DecodingKey::from_ec_pem(pem.as_bytes()).map_err(|e| {
        format!("not an EC public key in PEM format: expected -----BEGIN PUBLIC KEY----- ({e})")
    })?;
    // An uncompressed SEC1 point: 0x04 || x || y.
    let alg = match key.try_get_as_bytes().map_err(|e| e.to_string())?.len() {
        65 => Algorithm::ES256,
        97 => Algorithm::ES384,
        _ => return Err("unsupported curve: use P-256 (ES256) or P-384 (ES384)".into()),
    };
    (provider()?.verifier_factory)(&alg, &key)
        .map_err(|e| format!("not a valid EC public key ({e})"))?;
    Ok((key, alg))
}

/// `b64info` (standard base64 of JSON) wins over `info`; either way the result is raw JSON.
fn decode_info(
    info: Option<Box<RawValue>>,
    b64info: Option<&str>,
) -> Result<Option<Box<RawValue>>, TokenError> {
    let Some(b64) = b64info.filter(|s| !s.is_empty()) else {
        return Ok(info);
    };
    let bytes = STANDARD
        .decode(b64)
        .map_err(|_| invalid("b64info is not valid base64"))?;
    let text = String::from_utf8(bytes).map_err(|_| invalid("b64info is not UTF-8 JSON"))?;
    RawValue::from_string(text)
        .map(Some)
        .map_err(|_| invalid("b64info does not decode to JSON"))
}

/// A NumericDate claim as whole seconds; fractional dates are truncated.
fn seconds(n: Option<&serde_json::Number>, claim: &str) -> Result<Option<u64>, TokenError> {
    let Some(n) = n else { return Ok(None) };
    match (n.as_u64(), n.as_f64()) {
        (Some(s), _) => Ok(Some(s)),
        (None, Some(f)) if f.is_finite() && f >= 0.0 => Ok(Some(f as u64)),
        _ => Err(invalid(format!("{claim} is not a valid date"))),
    }
}

#[derive(Deserialize)]
struct RawHeader {
    alg: String,
}

/// Every claim either token kind reads; unknown claims are ignored.
#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    exp: Option<serde_json::Number>,
    nbf: Option<serde_json::Number>,
    expire_at: Option<serde_json::Number>,
    aud: Option<Audience>,
    iss: Option<String>,
    info: Option<Box<RawValue>>,
    b64info: Option<String>,
    channels: Option<Vec<String>>,
    subs: Option<BTreeMap<String, SubOptions>>,
    channel: Option<serde_json::Value>,
    #[serde(rename = "override")]
    overrides: Option<RawOverrides>,
}

impl Claims {
    /// Checks `exp` and `expire_at` against `now` and returns the expiry the caller enforces.
    fn expiry(&self, now: u64) -> Result<Option<u64>, TokenError> {
        let exp = seconds(self.exp.as_ref(), "exp")?;
        let expires_at = match seconds(self.expire_at.as_ref(), "expire_at")? {
            Some(0) => None,
            Some(at) => Some(at),
            None => exp,
        };
        // The token itself must be unexpired even when `expire_at` extends the connection.
        if exp.is_some_and(|exp| now >= exp) || expires_at.is_some_and(|at| now >= at) {
            return Err(TokenError::Expired);
        }
        Ok(expires_at)
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct SubOptions {
    info: Option<Box<RawValue>>,
    b64info: Option<String>,
}

#[derive(Deserialize, Default)]
struct RawOverrides {
    presence: Option<BoolValue>,
    join_leave: Option<BoolValue>,
    force_push_join_leave: Option<BoolValue>,
}

#[derive(Deserialize)]
struct BoolValue {
    value: bool,
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    const SECRET: &str = "test-secret";
    const NOW: u64 = 1_700_000_000;
    const RSA_PRIVATE: &str = include_str!("../tests/fixtures/rsa_private.pem");
    const RSA_PUBLIC: &str = include_str!("../tests/fixtures/rsa_public.pem");
    const RSA_OTHER_PUBLIC: &str = include_str!("../tests/fixtures/rsa_other_public.pem");
    const EC256_PRIVATE: &str = include_str!("../tests/fixtures/ec256_private.pem");
    const EC256_PUBLIC: &str = include_str!("../tests/fixtures/ec256_public.pem");
    const EC384_PRIVATE: &str = include_str!("../tests/fixtures/ec384_private.pem");
    const EC384_PUBLIC: &str = include_str!("../tests/fixtures/ec384_public.pem");

    fn verifier(cfg: TokenConfig) -> TokenVerifier {
        TokenVerifier::new(&cfg, "client.token").expect("test keys are valid")
    }

    fn hmac() -> TokenVerifier {
        verifier(TokenConfig {
            hmac_secret_key: SECRET.into(),
            ..Default::default()
        })
    }

    fn rsa_only() -> TokenVerifier {
        verifier(TokenConfig {
            rsa_public_key: RSA_PUBLIC.into(),
            ..Default::default()
        })
    }

    fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
        jsonwebtoken::encode(&Header::new(alg), claims, key).unwrap()
    }

    fn hs(alg: Algorithm, claims: &Value) -> String {
        sign(
            alg,
            &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
            claims,
        )
    }

    fn b64(bytes: impl AsRef<[u8]>) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// A token with an arbitrary header and payload, HMAC-signed with `secret` over them.
    fn hand_signed(header: &str, payload: &str, secret: &[u8]) -> String {
        let message = format!("{}.{}", b64(header), b64(payload));
        let key = EncodingKey::from_secret(secret).unwrap();
        let sig = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).unwrap();
        format!("{message}.{sig}")
    }

    fn is_invalid<T: std::fmt::Debug>(r: Result<T, TokenError>) -> bool {
        matches!(r, Err(TokenError::Invalid(_)))
    }

    #[test]
    fn good_hmac_tokens_of_every_size() {
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let token = hs(alg, &json!({"sub": "42", "exp": NOW + 60}));
            let claims = hmac().verify_connect(&token, NOW).unwrap();
            assert_eq!(claims.user, "42", "{alg:?}");
            assert_eq!(claims.expires_at, Some(NOW + 60));
            assert!(claims.info.is_none() && claims.subs.is_empty());
        }
    }

    #[test]
    fn good_rsa_tokens() {
        let key = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
        for alg in [Algorithm::RS256, Algorithm::RS384, Algorithm::RS512] {
            let token = sign(alg, &key, &json!({"sub": "7"}));
            let claims = rsa_only().verify_connect(&token, NOW).unwrap();
            assert_eq!(claims.user, "7", "{alg:?}");
            assert_eq!(claims.expires_at, None);
        }
    }

    #[test]
    fn good_ecdsa_tokens_match_the_curve() {
        let es256 = verifier(TokenConfig {
            ecdsa_public_key: EC256_PUBLIC.into(),
            ..Default::default()
        });
        let es384 = verifier(TokenConfig {
            ecdsa_public_key: EC384_PUBLIC.into(),
            ..Default::default()
        });
        let k256 = EncodingKey::from_ec_pem(EC256_PRIVATE.as_bytes()).unwrap();
        let k384 = EncodingKey::from_ec_pem(EC384_PRIVATE.as_bytes()).unwrap();
        let t256 = sign(Algorithm::ES256, &k256, &json!({"sub": "1"}));
        let t384 = sign(Algorithm::ES384, &k384, &json!({"sub": "2"}));
        assert_eq!(es256.verify_connect(&t256, NOW).unwrap().user, "1");
        assert_eq!(es384.verify_connect(&t384, NOW).unwrap().user, "2");
        assert!(is_invalid(es256.verify_connect(&t384, NOW)));
        assert!(is_invalid(es384.verify_connect(&t256, NOW)));
    }

    #[test]
    fn expiry_is_checked_against_now_without_leeway() {
        let v = hmac();
        let token = hs(Algorithm::HS256, &json!({"sub": "1", "exp": NOW}));
        assert_eq!(
            v.verify_connect(&token, NOW).unwrap_err(),
            TokenError::Expired
        );
        assert_eq!(
            v.verify_connect(&token, NOW - 1).unwrap().expires_at,
            Some(NOW)
        );
        let float_exp = hs(Algorithm::HS256, &json!({"exp": (NOW + 10) as f64 + 0.5}));
        assert_eq!(
            v.verify_connect(&float_exp, NOW).unwrap().expires_at,
            Some(NOW + 10)
        );
        let bad_exp = hs(Algorithm::HS256, &json!({"exp": "tomorrow"}));
        assert!(is_invalid(v.verify_connect(&bad_exp, NOW)));
    }

    #[test]
    fn expire_at_decides_the_connection_expiry() {
        let v = hmac();
        let never = hs(Algorithm::HS256, &json!({"exp": NOW + 60, "expire_at": 0}));
        assert_eq!(v.verify_connect(&never, NOW).unwrap().expires_at, None);
        let later = hs(
            Algorithm::HS256,
            &json!({"exp": NOW + 60, "expire_at": NOW + 3600}),
        );
        assert_eq!(
            v.verify_connect(&later, NOW).unwrap().expires_at,
            Some(NOW + 3600)
        );
        let past = hs(Algorithm::HS256, &json!({"expire_at": NOW - 1}));
        assert_eq!(
            v.verify_connect(&past, NOW).unwrap_err(),
            TokenError::Expired
        );
        // `expire_at` does not revive an expired token.
        let stale = hs(Algorithm::HS256, &json!({"exp": NOW - 1, "expire_at": 0}));
        assert_eq!(
            v.verify_connect(&stale, NOW).unwrap_err(),
            TokenError::Expired
        );
    }

    #[test]
    fn not_before_is_checked() {
        let token = hs(Algorithm::HS256, &json!({"nbf": NOW + 5}));
        assert!(is_invalid(hmac().verify_connect(&token, NOW)));
        assert!(hmac().verify_connect(&token, NOW + 5).is_ok());
    }

    #[test]
    fn wrong_key_is_invalid() {
        let token = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(b"other").unwrap(),
            &json!({"sub": "1"}),
        );
        assert!(is_invalid(hmac().verify_connect(&token, NOW)));

        let key = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
        let token = sign(Algorithm::RS256, &key, &json!({"sub": "1"}));
        let other = verifier(TokenConfig {
            rsa_public_key: RSA_OTHER_PUBLIC.into(),
            ..Default::default()
        });
        assert!(is_invalid(other.verify_connect(&token, NOW)));
    }

    #[test]
    fn tampered_payload_is_invalid() {
        let token = hs(Algorithm::HS256, &json!({"sub": "1"}));
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = b64(r#"{"sub":"admin"}"#);
        parts[1] = &forged;
        assert!(is_invalid(hmac().verify_connect(&parts.join("."), NOW)));
    }

    #[test]
    fn alg_none_is_invalid() {
        let payload = b64(r#"{"sub":"admin"}"#);
        for alg in ["none", "None", "NONE"] {
            let header = b64(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#));
            for sig in ["", "c2ln"] {
                let token = format!("{header}.{payload}.{sig}");
                let err = hmac().verify_connect(&token, NOW).unwrap_err();
                assert!(
                    matches!(&err, TokenError::Invalid(m) if m.contains("none")),
                    "{err}"
                );
            }
        }
    }

    #[test]
    fn hmac_signed_with_the_rsa_public_pem_is_invalid() {
        let forged = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(RSA_PUBLIC.as_bytes()).unwrap(),
            &json!({"sub": "admin"}),
        );
        assert!(is_invalid(rsa_only().verify_connect(&forged, NOW)));
        // With an HMAC secret configured too, the PEM still is not the secret.
        let both = verifier(TokenConfig {
            hmac_secret_key: SECRET.into(),
            rsa_public_key: RSA_PUBLIC.into(),
            ..Default::default()
        });
        assert!(is_invalid(both.verify_connect(&forged, NOW)));
    }

    #[test]
    fn algorithms_without_a_key_or_support_are_invalid() {
        let token = hs(Algorithm::HS256, &json!({"sub": "1"}));
        assert!(is_invalid(rsa_only().verify_connect(&token, NOW)));
        let none = verifier(TokenConfig::default());
        assert!(!none.has_keys());
        assert!(is_invalid(none.verify_connect(&token, NOW)));
        let rsa = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
        let ps256 = sign(Algorithm::PS256, &rsa, &json!({"sub": "1"}));
        let err = rsa_only().verify_connect(&ps256, NOW).unwrap_err();
        assert!(
            matches!(&err, TokenError::Invalid(m) if m.contains("PS256")),
            "{err}"
        );
    }

    #[test]
    fn audience_is_checked_when_configured() {
        let v = verifier(TokenConfig {
            hmac_secret_key: SECRET.into(),
            audience: "app".into(),
            ..Default::default()
        });
        for (aud, ok) in [
            (json!("app"), true),
            (json!(["web", "app"]), true),
            (json!("other"), false),
            (json!(["web"]), false),
            (json!(null), false),
        ] {
            let token = hs(Algorithm::HS256, &json!({"aud": aud}));
            assert_eq!(v.verify_connect(&token, NOW).is_ok(), ok, "aud {aud}");
        }
        // Not configured: any audience passes.
        let token = hs(Algorithm::HS256, &json!({"aud": "whatever"}));
        assert!(hmac().verify_connect(&token, NOW).is_ok());
    }

    #[test]
    fn issuer_is_checked_when_configured() {
        let v = verifier(TokenConfig {
            hmac_secret_key: SECRET.into(),
            issuer: "auth".into(),
            ..Default::default()
        });
        let good = hs(Algorithm::HS256, &json!({"iss": "auth"}));
        let wrong = hs(Algorithm::HS256, &json!({"iss": "evil"}));
        let missing = hs(Algorithm::HS256, &json!({}));
        assert!(v.verify_connect(&good, NOW).is_ok());
        assert!(is_invalid(v.verify_connect(&wrong, NOW)));
        assert!(is_invalid(v.verify_connect(&missing, NOW)));
        assert!(hmac().verify_connect(&wrong, NOW).is_ok());
    }

    #[test]
    fn info_and_b64info() {
        let v = hmac();
        let info = |claims: Value| {
            let token = hs(Algorithm::HS256, &claims);
            v.verify_connect(&token, NOW)
                .map(|c| c.info.map(|raw| raw.get().to_string()))
        };
        assert_eq!(
            info(json!({"info": {"a": 1}})).unwrap().unwrap(),
            r#"{"a":1}"#
        );
        assert_eq!(info(json!({"info": "x"})).unwrap().unwrap(), r#""x""#);
        let b = STANDARD.encode(r#"{"b": 2}"#);
        assert_eq!(info(json!({"b64info": b})).unwrap().unwrap(), r#"{"b": 2}"#);
        let both = info(json!({"info": {"a": 1}, "b64info": b}))
            .unwrap()
            .unwrap();
        assert_eq!(both, r#"{"b": 2}"#);
        assert_eq!(info(json!({"info": null})).unwrap(), None);
        assert!(is_invalid(info(
            json!({"b64info": STANDARD.encode("not json")})
        )));
        assert!(is_invalid(info(json!({"b64info": "%%%"}))));
        assert!(is_invalid(info(
            json!({"b64info": STANDARD.encode([0xff, 0xfe])})
        )));
    }

    #[test]
    fn subs_win_over_channels_and_come_sorted() {
        let v = hmac();
        let token = hs(Algorithm::HS256, &json!({"channels": ["b", "a", "b"]}));
        let subs = v.verify_connect(&token, NOW).unwrap().subs;
        let names: Vec<_> = subs
            .iter()
            .map(|(c, i)| (c.as_str(), i.is_none()))
            .collect();
        assert_eq!(names, [("a", true), ("b", true)]);

        let token = hs(
            Algorithm::HS256,
            &json!({
                "channels": ["ignored"],
                "subs": {"z:1": {}, "chat:1": {"info": {"role": "mod"}},
                         "b64": {"b64info": STANDARD.encode("[1]")}},
            }),
        );
        let subs = v.verify_connect(&token, NOW).unwrap().subs;
        let got: Vec<_> = subs
            .iter()
            .map(|(c, i)| (c.as_str(), i.as_ref().map(|r| r.get())))
            .collect();
        assert_eq!(
            got,
            [
                ("b64", Some("[1]")),
                ("chat:1", Some(r#"{"role":"mod"}"#)),
                ("z:1", None)
            ]
        );

        // An empty `subs` leaves `channels` in charge.
        let token = hs(Algorithm::HS256, &json!({"channels": ["a"], "subs": {}}));
        assert_eq!(v.verify_connect(&token, NOW).unwrap().subs.len(), 1);
    }

    #[test]
    fn channel_claim_in_a_connection_token_is_invalid() {
        let token = hs(Algorithm::HS256, &json!({"sub": "1", "channel": "chat:1"}));
        let err = hmac().verify_connect(&token, NOW).unwrap_err();
        assert!(
            matches!(&err, TokenError::Invalid(m) if m.contains("channel")),
            "{err}"
        );
    }

    #[test]
    fn subscription_token_claims_and_overrides() {
        let v = hmac();
        let token = hs(
            Algorithm::HS256,
            &json!({
                "sub": "42", "channel": "$chat:1", "exp": NOW + 10, "info": {"k": true},
                "override": {
                    "presence": {"value": true},
                    "join_leave": {"value": false},
                    "force_push_join_leave": {"value": true},
                    "history": {"value": true},
                },
            }),
        );
        let claims = v.verify_subscribe(&token, NOW).unwrap();
        assert_eq!(claims.user, "42");
        assert_eq!(claims.channel, "$chat:1");
        assert_eq!(claims.expires_at, Some(NOW + 10));
        assert_eq!(claims.info.unwrap().get(), r#"{"k":true}"#);
        assert_eq!(
            claims.overrides,
            Overrides {
                presence: Some(true),
                join_leave: Some(false),
                force_push_join_leave: Some(true),
            }
        );

        let plain = hs(Algorithm::HS256, &json!({"channel": "c", "expire_at": 0}));
        let claims = v.verify_subscribe(&plain, NOW).unwrap();
        assert_eq!(claims.user, "");
        assert_eq!(claims.overrides, Overrides::default());
        assert_eq!(claims.expires_at, None);

        for bad in [json!({}), json!({"channel": ""}), json!({"channel": 5})] {
            assert!(is_invalid(
                v.verify_subscribe(&hs(Algorithm::HS256, &bad), NOW)
            ));
        }
        let bad_override = hs(
            Algorithm::HS256,
            &json!({"channel": "c", "override": {"presence": true}}),
        );
        assert!(is_invalid(v.verify_subscribe(&bad_override, NOW)));
        let expired = hs(Algorithm::HS256, &json!({"channel": "c", "exp": NOW}));
        assert_eq!(
            v.verify_subscribe(&expired, NOW).unwrap_err(),
            TokenError::Expired
        );
    }

    #[test]
    fn malformed_tokens_are_invalid_never_a_panic() {
        let v = hmac();
        let good = hs(Algorithm::HS256, &json!({"sub": "1"}));
        let header = good.split('.').next().unwrap();
        let cases = [
            String::new(),
            ".".into(),
            "..".into(),
            "...".into(),
            "a.b".into(),
            "a.b.c".into(),
            "!!!.@@@.###".into(),
            format!("{good}.extra"),
            format!("{header}.!!!.sig"),
            format!("{header}..{}", good.rsplit('.').next().unwrap()),
            format!("{}.{}", &good[..good.rfind('.').unwrap()], "not*base64"),
            format!("{}.payload.sig", b64("not json")),
            format!("{}.payload.sig", b64(r#"{"typ":"JWT"}"#)),
            format!("{}.payload.sig", b64(r#"{"alg":5}"#)),
            "é.é.é".into(),
        ];
        for token in &cases {
            assert!(is_invalid(v.verify_connect(token, NOW)), "{token:?}");
            assert!(is_invalid(v.verify_subscribe(token, NOW)), "{token:?}");
        }
        // Correctly signed, but the payload is not a claims object.
        let hs256 = r#"{"alg":"HS256","typ":"JWT"}"#;
        for payload in [
            "not json",
            "[1,2]",
            "null",
            r#"{"sub":5}"#,
            r#"{"channels":"a"}"#,
        ] {
            let token = hand_signed(hs256, payload, SECRET.as_bytes());
            assert!(is_invalid(v.verify_connect(&token, NOW)), "{payload}");
        }
        assert!(
            v.verify_connect(&hand_signed(hs256, "{}", SECRET.as_bytes()), NOW)
                .is_ok()
        );
    }

    #[test]
    fn bad_keys_name_the_config_key() {
        let rsa = |pem: &str| {
            TokenVerifier::new(
                &TokenConfig {
                    rsa_public_key: pem.into(),
                    ..Default::default()
                },
                "client.token",
            )
        };
        for pem in [
            "not a pem",
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
            EC256_PUBLIC,
            RSA_PRIVATE,
        ] {
            let err = rsa(pem).unwrap_err();
            assert_eq!(err.key, "client.token.rsa_public_key", "{pem}");
        }
        assert!(rsa(RSA_PRIVATE).unwrap_err().reason.contains("private key"));

        let ec = |pem: &str| {
            TokenVerifier::new(
                &TokenConfig {
                    ecdsa_public_key: pem.into(),
                    ..Default::default()
                },
                "client.subscription_token",
            )
        };
        for pem in ["garbage", RSA_PUBLIC, EC256_PRIVATE] {
            let err = ec(pem).unwrap_err();
            assert_eq!(err.key, "client.subscription_token.ecdsa_public_key");
            assert!(err.to_string().starts_with(&err.key));
        }
    }

    #[test]
    fn escaped_newlines_in_pem_are_accepted() {
        let escaped = RSA_PUBLIC.trim().replace('\n', "\\n");
        let v = verifier(TokenConfig {
            rsa_public_key: escaped,
            ..Default::default()
        });
        let key = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
        let token = sign(Algorithm::RS256, &key, &json!({"sub": "1"}));
        assert!(v.verify_connect(&token, NOW).is_ok());
    }

    #[test]
    fn sign_hs256_round_trips() {
        let claims = json!({"sub": "42", "exp": NOW + 60, "info": {"n": 1}, "channels": ["a"]});
        let token = sign_hs256(SECRET, &claims);
        assert_eq!(token.split('.').count(), 3);
        let got = hmac().verify_connect(&token, NOW).unwrap();
        assert_eq!(got.user, "42");
        assert_eq!(got.info.unwrap().get(), r#"{"n":1}"#);
        assert_eq!(got.subs.len(), 1);
        // An empty secret is the all-zero HMAC key (RFC 2104 padding), not a panic.
        assert_eq!(sign_hs256("", &claims), sign_hs256("\0", &claims));
    }
}
