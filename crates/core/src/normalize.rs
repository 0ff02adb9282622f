//! Pinterest-exact normalisation and SHA-256 hashing of the hashed CAPI `user_data` keys
//! ("advanced matching").
//!
//! Pinterest wants each of [`HashedField`] as an array of lower-case hex SHA-256 digests of
//! the UTF-8 bytes of a normalised value. [`normalize`] applies the rules below; [`hash`]
//! normalises and hashes, and passes through values that already are digests.
//!
//! Sources: the OpenAPI field descriptions (`shared/reference/pinterest-capi.md` §2.3, §6.1)
//! and the vectors in `testdata/pinterest/normalization-test-vectors.json`. Where Pinterest
//! is silent the choice is ours and is marked *choice* below.
//!
//! # Rules shared by every field
//!
//! | Rule | Status |
//! |---|---|
//! | Surrounding Unicode whitespace is trimmed first. | *choice* (Pinterest: "unconfirmed") |
//! | Empty or whitespace-only input → [`NormalizeError::Empty`]. | *choice* |
//! | Hash = SHA-256 of the UTF-8 bytes, as 64 lower-case hex characters. | spec (lower case: examples) |
//! | [`hash`]: a value that is already 64 hex characters (after trimming) is a digest: passed through lower-cased, never hashed again. This includes `external_id` values that happen to be 64 hex characters. | *choice* |
//! | "Lower-case" means Unicode lower-casing ([`str::to_lowercase`]). No Unicode normalisation (NFC) is applied: a precomposed `é` and `e` + combining accent hash differently. | *choice* |
//! | Error messages never contain the raw value (it is PII). | *choice* |
//! | `country` hint: resolved with [`country_code`] (alpha-2 in any case, or a common English name); a hint that does not resolve is treated as no hint. | *choice* |
//!
//! # Per-field rules
//!
//! | Field | Normalised form | Accepts | Rejects (`Invalid`) |
//! |---|---|---|---|
//! | `em` | all whitespace removed, lower-cased | exactly one `@`, non-empty local part, domain with at least one dot and no empty labels | anything else; control characters. No Gmail dot/plus stripping. |
//! | `ph` | E.164 digits without `+`, e.g. `15551234567` | see *Phone numbers* below | letters (`555-555-SHIP`), non-ASCII digits, other symbols (`#`, `*`, `,` …), misplaced `+`, wrong length |
//! | `fn`, `ln` | lower-cased; inner whitespace runs collapsed to one ASCII space; hyphens, apostrophes and other punctuation kept (`Mary-Jane  O'Neil` → `mary-jane o'neil`, `Pérez` → `pérez`) | any text | control characters. (Pinterest says only "lower case"; removing punctuation would be a guess.) |
//! | `ge` | `f`, `m` or `n` | case-insensitive, ignoring spaces, `-`, `_`, `.`: **f** ← `f`, `female`, `woman`, `w` (German *weiblich*, common in DACH exports); **m** ← `m`, `male`, `man`; **n** ← `n`, `nonbinary` (so also `non-binary`, `non binary`) | everything else (`x`, `nb`, `other`, `unknown`, `d` …) |
//! | `db` | `YYYYMMDD` | `YYYYMMDD`, `YYYY-MM-DD`, `YYYY/MM/DD`, `YYYY.MM.DD` (month and day may be one digit when a separator is used); year 1900..=2100; real calendar dates (29 February only in leap years) | day-first or month-first dates such as `01/15/1990` (ambiguous), mixed separators, times, anything else |
//! | `ct` | lower-cased, only alphanumeric characters kept (`San Francisco` → `sanfrancisco`, `St. John's` → `stjohns`, `München` → `münchen`) | any text with a letter or digit | text without letters or digits |
//! | `st` | lower-cased alphanumerics; see *States* below | 1–3 character codes; US/CA names | longer strings that are not a known US/CA name (a full name is never hashed) |
//! | `zp` | US: the 5-digit ZIP; elsewhere lower-case alphanumerics | see *Postcodes* below | see below |
//! | `country` | ISO-3166-1 alpha-2, lower case | alpha-2 in any case, `UK` (→ `gb`), English names and common aliases (`United States`, `USA`, `Deutschland` …) | unknown codes and names |
//! | `external_id` | trimmed only, otherwise byte-identical | anything | — |
//! | `hashed_maids` | trimmed, lower-cased | anything (*choice*: Pinterest states no case rule) | — |
//!
//! ## Phone numbers (`ph`)
//!
//! | Input | Rule |
//! |---|---|
//! | Separators | Whitespace, `-`, `.`, `/`, `(`, `)`, Unicode dashes are dropped. Any letter makes the number invalid (vanity numbers, `ext. 12`, `tel:`). |
//! | `+` or `00` prefix | The country code is present. After it, `(0)` (as in `+44 (0)20 …`) is dropped. The digits must start with a known calling code. |
//! | `011` prefix, NANP hint | The NANP international prefix: treated like `00`. |
//! | No prefix, with a hint | A national trunk prefix proves the number is national: it is stripped and the calling code added. Trunk prefix: `0` for most countries; `8` on 11-digit numbers for RU/KZ; `06` for HU; none for NANP, IT, SM, VA, CI (the leading `0` is part of the number there). Without a trunk prefix: if the digits start with the calling code and the rest is a valid national number, they are kept; else if the whole is a valid national number, the code is prepended; else the number is invalid (a foreign number needs `+` or `00` when a hint is given: guessing could match an unrelated person). NANP: 10 digits → prepend `1`; 11 digits starting with `1` → keep. |
//! | No prefix, no hint | Only evidently international numbers: 11–15 digits starting with a known calling code. |
//! | Validation | The result has 8–15 digits. For calling codes with a fixed numbering plan (NANP, RU/KZ, GB, FR, ES, NL, BE, CH, AU, IN, MX, BR and others; see `phone::nsn_lengths`; not DE, IT, AT, CN, whose lengths vary widely) the national part must have a valid length. NANP area codes cannot start with `0` or `1`, so Shopify's placeholder `123-123-1234` is dropped. |
//!
//! A normalised number is canonical: `+` followed by it normalises to itself under any hint.
//! A bare digit string is inherently ambiguous, so re-normalising an output is stable only
//! under a hint of the number's own country (or no hint, for 11+ digits).
//! A national number without trunk prefix that begins with the digits of its own calling
//! code (e.g. an Italian `393…` mobile) is read as already international.
//!
//! ## States (`st`)
//!
//! | Input | Rule |
//! |---|---|
//! | ISO 3166-2 code `XX-YYY` | The subdivision part is used: `US-CA` → `ca`, Shopify's `JP-13` → `13`. |
//! | US name (hint `us`, a US territory or freely associated state, or no hint) | All 50 states, DC (`District of Columbia`, `Washington DC`), AS, GU, MP, PR, VI, UM, FM, MH, PW and the Armed Forces AA/AE/AP → USPS code. |
//! | Canadian name (hint `ca` or no hint) | All 13 provinces and territories, English and French names (`Québec`, `Colombie-Britannique`) and `PEI` → Canada Post code. |
//! | 1–3 characters | Taken as a code as it is (`CA` → `ca`, Shopify's `B` for Buenos Aires → `b`, `NSW` → `nsw`). |
//! | Anything else | Invalid: we only hash codes, never full names we cannot map. |
//!
//! ## Postcodes (`zp`)
//!
//! | Input | Rule |
//! |---|---|
//! | Hint `us` (or a territory using USPS ZIPs: AS, GU, MP, PR, VI, UM, FM, MH, PW) | Only digits, `-` and spaces; 5 or 9 digits; the first 5 are kept (`94103-1234` → `94103`). Anything else is invalid. |
//! | No hint, value is `12345` or `12345-6789` | As US. |
//! | Otherwise | Lower-case, only ASCII letters and digits kept: `K2P 0B0` → `k2p0b0`, `SW1A 1AA` → `sw1a1aa`, `10115` → `10115`, `01310-100` → `01310100`. Must be 3–10 characters with at least one digit (rejects `N/A`, `-`). Non-ASCII letters are invalid. |
//!
//! Pinterest says "digits only". Applied to Canadian or British postcodes that would turn
//! `K2P 0B0` into `20` and `SW1A 1AA` into `11`: values shared by thousands of unrelated
//! postcodes, which can only create false matches. Pinterest's third-party documentation
//! says "other countries follow local standards", so we keep the letters (lower-cased,
//! without spaces, like every other field). This is **unconfirmed** by Pinterest.

mod countries;
mod phone;
mod regions;
#[cfg(test)]
mod tests;

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};

use countries::{COUNTRIES, COUNTRY_ALIASES};
use regions::{CA_PROVINCES, US_STATES};

/// The user_data keys Pinterest wants SHA-256 hashed, as arrays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HashedField {
    /// Email address.
    Em,
    /// Phone number.
    Ph,
    /// First name.
    Fn,
    /// Last name.
    Ln,
    /// Gender.
    Ge,
    /// Date of birth.
    Db,
    /// City.
    Ct,
    /// State or province.
    St,
    /// Postcode.
    Zp,
    /// Country.
    Country,
    /// The advertiser's user id.
    ExternalId,
    /// Mobile advertising id (GAID / IDFA).
    HashedMaids,
}

impl HashedField {
    /// Every hashed field, in wire order.
    pub const ALL: [HashedField; 12] = [
        HashedField::Em,
        HashedField::Ph,
        HashedField::Fn,
        HashedField::Ln,
        HashedField::Ge,
        HashedField::Db,
        HashedField::Ct,
        HashedField::St,
        HashedField::Zp,
        HashedField::Country,
        HashedField::ExternalId,
        HashedField::HashedMaids,
    ];

    /// The `user_data` key, e.g. `"em"`, `"external_id"`.
    pub fn key(self) -> &'static str {
        match self {
            HashedField::Em => "em",
            HashedField::Ph => "ph",
            HashedField::Fn => "fn",
            HashedField::Ln => "ln",
            HashedField::Ge => "ge",
            HashedField::Db => "db",
            HashedField::Ct => "ct",
            HashedField::St => "st",
            HashedField::Zp => "zp",
            HashedField::Country => "country",
            HashedField::ExternalId => "external_id",
            HashedField::HashedMaids => "hashed_maids",
        }
    }

    /// The field for a `user_data` key (exact, lower-case), or `None`.
    pub fn from_key(key: &str) -> Option<HashedField> {
        HashedField::ALL.into_iter().find(|f| f.key() == key)
    }
}

impl fmt::Display for HashedField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// A SHA-256 digest as 64 lower-case hex characters. The only ways to get one are hashing
/// ([`Sha256Hex::of`], [`hash`]) or parsing ([`Sha256Hex::parse`], deserialising).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Sha256Hex(String);

impl Sha256Hex {
    /// Hash the UTF-8 bytes of an already normalised value.
    pub fn of(normalized: &str) -> Sha256Hex {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let digest = Sha256::digest(normalized.as_bytes());
        let mut s = String::with_capacity(64);
        for b in digest {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
        Sha256Hex(s)
    }

    /// Exactly 64 hex characters (any case; no surrounding whitespace) → lower-cased digest.
    pub fn parse(s: &str) -> Option<Sha256Hex> {
        (s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| Sha256Hex(s.to_ascii_lowercase()))
    }

    /// The 64 lower-case hex characters.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Sha256Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Sha256Hex {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<Sha256Hex> for String {
    fn from(h: Sha256Hex) -> String {
        h.0
    }
}

impl<'de> Deserialize<'de> for Sha256Hex {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Sha256Hex::parse(&s).ok_or_else(|| {
            serde::de::Error::custom("expected a sha-256 digest as 64 hexadecimal characters")
        })
    }
}

/// Why a value could not be normalised. Messages never contain the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NormalizeError {
    /// The value is empty or only whitespace.
    #[error("value is empty")]
    Empty,
    /// The value cannot be normalised for `field` (a `user_data` key).
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The `user_data` key, e.g. `"ph"`.
        field: &'static str,
        /// What is wrong, in lower case, without the value.
        reason: String,
    },
}

/// Normalise a raw value of `field` by Pinterest's rules (see the module documentation).
///
/// `country` is an ISO-3166 alpha-2 hint (any case; a common English name also works) used
/// by `ph` (to add the calling code) and `zp`/`st` (country-specific rules); `None` when
/// unknown. A hint that does not resolve to a country is ignored.
pub fn normalize(
    field: HashedField,
    raw: &str,
    country: Option<&str>,
) -> Result<String, NormalizeError> {
    let s = raw.trim();
    if s.is_empty() {
        return Err(NormalizeError::Empty);
    }
    let hint = country.and_then(lookup_country);
    let result = match field {
        HashedField::Em => email(s),
        HashedField::Ph => phone::normalize_phone(s, hint),
        HashedField::Fn | HashedField::Ln => person_name(s),
        HashedField::Ge => gender(s),
        HashedField::Db => birth_date(s),
        HashedField::Ct => city(s),
        HashedField::St => state(s, hint),
        HashedField::Zp => postcode(s, hint),
        HashedField::Country => lookup_country(s)
            .map(str::to_string)
            .ok_or_else(|| "not an iso-3166 alpha-2 code or known country name".to_string()),
        HashedField::ExternalId => Ok(s.to_string()),
        HashedField::HashedMaids => Ok(s.to_lowercase()),
    };
    result.map_err(|reason| NormalizeError::Invalid {
        field: field.key(),
        reason,
    })
}

/// Normalise and hash. A value that already is 64 hex characters (after trimming) is passed
/// through lower-cased, never hashed twice.
pub fn hash(
    field: HashedField,
    raw: &str,
    country: Option<&str>,
) -> Result<Sha256Hex, NormalizeError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(NormalizeError::Empty);
    }
    if let Some(digest) = Sha256Hex::parse(trimmed) {
        return Ok(digest);
    }
    normalize(field, trimmed, country).map(|n| Sha256Hex::of(&n))
}

/// The international calling code for an ISO-3166 alpha-2 country (any case, surrounding
/// whitespace ignored; `UK` is taken as `GB`), e.g. `"us"` → `"1"`, `"gb"` → `"44"`,
/// `"de"` → `"49"`. `None` for unknown codes and for territories without a numbering plan
/// of their own (AQ, BV, GS, HM, TF, UM).
pub fn calling_code(country: &str) -> Option<&'static str> {
    let code = country.trim().to_ascii_lowercase();
    let code = if code == "uk" { "gb" } else { code.as_str() };
    by_code(code)
        .map(|&(_, cc, _)| cc)
        .filter(|cc| !cc.is_empty())
}

/// The table row of an alpha-2 code (lower case). Every event asks this several times (the
/// country itself, phones, postcodes, regions), so it is a hash lookup, built once.
fn by_code(code: &str) -> Option<&'static (&'static str, &'static str, &'static str)> {
    static INDEX: std::sync::OnceLock<std::collections::HashMap<&'static str, usize>> =
        std::sync::OnceLock::new();
    let index = INDEX.get_or_init(|| {
        COUNTRIES
            .iter()
            .enumerate()
            .map(|(i, &(a2, _, _))| (a2, i))
            .collect()
    });
    index.get(code).map(|&i| &COUNTRIES[i])
}

/// Normalise a country given as alpha-2 code (any case) or, for common cases, English name,
/// e.g. `"United States"` → `"us"`, `"CA"` → `"ca"`, `"UK"` → `"gb"`. `None` if unknown.
pub fn country_code(raw: &str) -> Option<String> {
    lookup_country(raw).map(str::to_string)
}

type Reason = String;

/// Lower-case and keep only alphanumeric characters.
fn compact(s: &str) -> String {
    s.to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric())
        .collect()
}

fn lookup_country(raw: &str) -> Option<&'static str> {
    let trimmed = raw.trim();
    // The common case, a two-letter code, without allocating.
    if trimmed.len() == 2 && trimmed.bytes().all(|b| b.is_ascii_alphabetic()) {
        let lower = [
            trimmed.as_bytes()[0].to_ascii_lowercase(),
            trimmed.as_bytes()[1].to_ascii_lowercase(),
        ];
        if let Some(&(a2, _, _)) = std::str::from_utf8(&lower).ok().and_then(by_code) {
            return Some(a2);
        }
    }
    let key = compact(raw);
    if key.is_empty() {
        return None;
    }
    let by_code = |code: &str| by_code(code).map(|&(a2, _, _)| a2);
    if key.len() == 2 {
        return by_code(&key).or_else(|| {
            COUNTRY_ALIASES
                .iter()
                .find(|&&(alias, _)| alias == key)
                .and_then(|&(_, code)| by_code(code))
        });
    }
    COUNTRIES
        .iter()
        .find(|&&(_, _, name)| {
            name.chars()
                .flat_map(char::to_lowercase)
                .filter(|c| c.is_alphanumeric())
                .eq(key.chars())
        })
        .map(|&(a2, _, _)| a2)
        .or_else(|| {
            COUNTRY_ALIASES
                .iter()
                .find(|&&(alias, _)| alias == key)
                .and_then(|&(_, code)| by_code(code))
        })
}

fn email(s: &str) -> Result<String, Reason> {
    let e: String = s
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_lowercase();
    if e.chars().any(char::is_control) {
        return Err("contains control characters".into());
    }
    let Some((local, domain)) = e.split_once('@') else {
        return Err("has no '@'".into());
    };
    if domain.contains('@') {
        return Err("has more than one '@'".into());
    }
    if local.is_empty() {
        return Err("has nothing before the '@'".into());
    }
    if !domain.contains('.') || domain.split('.').any(str::is_empty) {
        return Err("domain must have a dot between non-empty labels".into());
    }
    Ok(e)
}

fn person_name(s: &str) -> Result<String, Reason> {
    let mut out = String::with_capacity(s.len());
    for word in s.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    if out.chars().any(char::is_control) {
        return Err("contains control characters".into());
    }
    Ok(out.to_lowercase())
}

fn gender(s: &str) -> Result<String, Reason> {
    let key: String = s
        .to_lowercase()
        .chars()
        .filter(|&c| !(c.is_whitespace() || matches!(c, '-' | '_' | '.')))
        .collect();
    let g = match key.as_str() {
        "f" | "female" | "woman" | "w" => "f",
        "m" | "male" | "man" => "m",
        "n" | "nonbinary" => "n",
        _ => return Err("expected f, m or n (or female, male, non-binary)".into()),
    };
    Ok(g.to_string())
}

fn birth_date(s: &str) -> Result<String, Reason> {
    const FORMAT: &str = "expected a date as yyyymmdd or yyyy-mm-dd";
    let all_digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    let (y, m, d) = if s.len() == 8 && all_digits(s) {
        (&s[..4], &s[4..6], &s[6..])
    } else {
        let Some(sep) = s.chars().find(|c| !c.is_ascii_digit()) else {
            return Err(FORMAT.into());
        };
        if !matches!(sep, '-' | '/' | '.') {
            return Err(FORMAT.into());
        }
        let parts: Vec<&str> = s.split(sep).collect();
        let [a, b, c] = parts[..] else {
            return Err(FORMAT.into());
        };
        if !(all_digits(a) && all_digits(b) && all_digits(c)) {
            return Err(FORMAT.into());
        }
        if a.len() == 4 && (1..=2).contains(&b.len()) && (1..=2).contains(&c.len()) {
            (a, b, c)
        } else if c.len() == 4 && a.len() <= 2 && b.len() <= 2 {
            return Err("ambiguous day/month order; expected the year first (yyyy-mm-dd)".into());
        } else {
            return Err(FORMAT.into());
        }
    };
    // All parts are 1–4 ASCII digits, so parsing cannot fail or overflow.
    let (year, month, day): (u16, u8, u8) = match (y.parse(), m.parse(), d.parse()) {
        (Ok(y), Ok(m), Ok(d)) => (y, m, d),
        _ => return Err(FORMAT.into()),
    };
    if !(1900..=2100).contains(&year) {
        return Err("year is outside 1900 to 2100".into());
    }
    if !(1..=12).contains(&month) {
        return Err("month is not 1 to 12".into());
    }
    let leap = year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400));
    let days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if !(1..=days).contains(&day) {
        return Err("day does not exist in that month".into());
    }
    Ok(format!("{year:04}{month:02}{day:02}"))
}

fn city(s: &str) -> Result<String, Reason> {
    let out = compact(s);
    if out.is_empty() {
        return Err("has no letters or digits".into());
    }
    Ok(out)
}

/// Countries and territories whose addresses use US states and USPS ZIP codes.
const USPS: &[&str] = &["us", "as", "gu", "mp", "pr", "vi", "um", "fm", "mh", "pw"];

fn state(s: &str, hint: Option<&str>) -> Result<String, Reason> {
    // ISO 3166-2 "US-CA", Shopify "JP-13": keep the subdivision part.
    let s = match s.split_once('-') {
        Some((cc, sub))
            if cc.len() == 2
                && cc.bytes().all(|b| b.is_ascii_alphabetic())
                && (1..=3).contains(&sub.len())
                && sub.bytes().all(|b| b.is_ascii_alphanumeric()) =>
        {
            sub
        }
        _ => s,
    };
    let key = compact(s);
    if key.is_empty() {
        return Err("has no letters or digits".into());
    }
    let us_names = hint.is_none_or(|h| USPS.contains(&h));
    let ca_names = hint.is_none_or(|h| h == "ca");
    let find = |table: &[(&str, &'static str)]| {
        table
            .iter()
            .find(|&&(name, _)| name == key)
            .map(|&(_, code)| code)
    };
    if let Some(code) = us_names
        .then(|| find(US_STATES))
        .flatten()
        .or_else(|| ca_names.then(|| find(CA_PROVINCES)).flatten())
    {
        return Ok(code.to_string());
    }
    if key.chars().count() <= 3 {
        return Ok(key);
    }
    Err("not a state or province code (1 to 3 characters) or a known us/canadian name".into())
}

fn postcode(s: &str, hint: Option<&str>) -> Result<String, Reason> {
    let us_like = |s: &str| {
        let b = s.as_bytes();
        let five = |b: &[u8]| b.len() == 5 && b.iter().all(u8::is_ascii_digit);
        match b.len() {
            5 => five(b),
            10 => five(&b[..5]) && b[5] == b'-' && b[6..].iter().all(u8::is_ascii_digit),
            _ => false,
        }
    };
    let us = match hint {
        Some(h) => USPS.contains(&h),
        None => us_like(s),
    };
    if us {
        if !s
            .chars()
            .all(|c| c.is_ascii_digit() || c == '-' || c.is_whitespace())
        {
            return Err("a us zip code has only digits".into());
        }
        let digits: String = s.chars().filter(char::is_ascii_digit).collect();
        if digits.len() != 5 && digits.len() != 9 {
            return Err("a us zip code has 5 or 9 digits".into());
        }
        return Ok(digits[..5].to_string());
    }
    let out = compact(s);
    if !out.is_ascii() {
        return Err("contains non-ascii letters".into());
    }
    if !(3..=10).contains(&out.len()) || !out.bytes().any(|b| b.is_ascii_digit()) {
        return Err("expected 3 to 10 letters and digits, including a digit".into());
    }
    Ok(out)
}
