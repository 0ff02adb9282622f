use std::collections::BTreeSet;

use proptest::prelude::*;

use super::countries::{COUNTRIES, COUNTRY_ALIASES};
use super::phone::split_calling_code;
use super::regions::{CA_PROVINCES, US_STATES};
use super::*;

mod fields;

const EM: HashedField = HashedField::Em;
const PH: HashedField = HashedField::Ph;
const FN: HashedField = HashedField::Fn;
const LN: HashedField = HashedField::Ln;
const GE: HashedField = HashedField::Ge;
const DB: HashedField = HashedField::Db;
const CT: HashedField = HashedField::Ct;
const ST: HashedField = HashedField::St;
const ZP: HashedField = HashedField::Zp;
const COUNTRY: HashedField = HashedField::Country;
const EXTERNAL_ID: HashedField = HashedField::ExternalId;
const MAIDS: HashedField = HashedField::HashedMaids;

/// `expected`: `Some(normalised)`, or `None` for `NormalizeError::Invalid`.
#[track_caller]
fn check(field: HashedField, raw: &str, country: Option<&str>, expected: Option<&str>) {
    let got = normalize(field, raw, country);
    match expected {
        Some(want) => assert_eq!(
            got.as_deref(),
            Ok(want),
            "{field} {raw:?} (country {country:?})"
        ),
        None => {
            let Err(err @ NormalizeError::Invalid { field: key, .. }) = &got else {
                panic!("{field} {raw:?} (country {country:?}): expected Invalid, got {got:?}");
            };
            assert_eq!(*key, field.key());
            // The message must not echo the (PII) value.
            let t = raw.trim();
            if t.chars().count() >= 4 {
                assert!(!err.to_string().contains(t), "message echoes value: {err}");
            }
        }
    }
}

#[track_caller]
fn rows(field: HashedField, country: Option<&str>, rows: &[(&str, Option<&str>)]) {
    for &(raw, expected) in rows {
        check(field, raw, country, expected);
    }
}

// ---------------------------------------------------------------------------------------
// Golden vectors

#[derive(serde::Deserialize)]
struct Vector {
    field: String,
    raw: String,
    normalized: String,
    sha256_hex: String,
}

#[test]
fn normalize_reproduces_every_golden_vector() {
    let vectors: Vec<Vector> = serde_json::from_str(include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/pinterest/normalization-test-vectors.json"
    )))
    .expect("vectors parse");
    assert_eq!(vectors.len(), 12);
    let mut fields = BTreeSet::new();
    for v in &vectors {
        let field = HashedField::from_key(&v.field).expect("known field");
        fields.insert(field);
        assert_eq!(
            normalize(field, &v.raw, None).as_deref(),
            Ok(v.normalized.as_str()),
            "{}",
            v.field
        );
        assert_eq!(
            Sha256Hex::of(&v.normalized).as_str(),
            v.sha256_hex,
            "{}",
            v.field
        );
        assert_eq!(
            hash(field, &v.raw, None).map(String::from).as_deref(),
            Ok(v.sha256_hex.as_str()),
            "{}",
            v.field
        );
    }
    assert_eq!(fields.len(), HashedField::ALL.len(), "a vector per field");
}

// ---------------------------------------------------------------------------------------
// Types

#[test]
fn normalize_field_keys_round_trip() {
    let keys: Vec<&str> = HashedField::ALL.iter().map(|f| f.key()).collect();
    assert_eq!(
        keys,
        [
            "em",
            "ph",
            "fn",
            "ln",
            "ge",
            "db",
            "ct",
            "st",
            "zp",
            "country",
            "external_id",
            "hashed_maids"
        ]
    );
    for f in HashedField::ALL {
        assert_eq!(HashedField::from_key(f.key()), Some(f));
        assert_eq!(f.to_string(), f.key());
    }
    for bad in ["EM", "", "email", "client_ip_address", "click_id", " em"] {
        assert_eq!(HashedField::from_key(bad), None, "{bad:?}");
    }
}

#[test]
fn normalize_sha256hex_of_parse_serde() {
    assert_eq!(
        Sha256Hex::of("").as_str(),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        Sha256Hex::of("abc").to_string(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let upper = "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD";
    assert_eq!(Sha256Hex::parse(upper), Some(Sha256Hex::of("abc")));
    for bad in [
        "",
        &upper[..63],
        &format!("{upper}0"),
        &format!(" {}", &upper[..63]),
        &format!("{}g", &upper[..63]),
        &format!("{}é", &upper[..62]),
    ] {
        assert_eq!(Sha256Hex::parse(bad), None, "{bad:?}");
    }
    let json = serde_json::to_string(&Sha256Hex::of("abc")).unwrap();
    assert_eq!(
        json,
        "\"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\""
    );
    let back: Sha256Hex = serde_json::from_str(&format!("\"{upper}\"")).unwrap();
    assert_eq!(back, Sha256Hex::of("abc"));
    for bad in ["\"abc\"", "42", "null", "\"\"", &format!("\"{upper} \"")] {
        assert!(serde_json::from_str::<Sha256Hex>(bad).is_err(), "{bad}");
    }
    let err = serde_json::from_str::<Sha256Hex>("\"secret@example.com\"").unwrap_err();
    assert!(!err.to_string().contains("secret"), "{err}");
}

#[test]
fn normalize_error_messages() {
    assert_eq!(NormalizeError::Empty.to_string(), "value is empty");
    let err = normalize(PH, "555-555-SHIP", Some("us")).unwrap_err();
    assert_eq!(err.to_string(), "invalid ph: contains letters");
    let err = normalize(DB, "01/15/1990", None).unwrap_err();
    assert!(err.to_string().contains("ambiguous"), "{err}");
}

#[test]
fn normalize_empty_is_empty_for_every_field() {
    for f in HashedField::ALL {
        for raw in ["", " ", "\t\n ", "\u{a0}\u{3000}"] {
            for country in [None, Some("us")] {
                assert_eq!(
                    normalize(f, raw, country),
                    Err(NormalizeError::Empty),
                    "{f}"
                );
                assert_eq!(hash(f, raw, country), Err(NormalizeError::Empty), "{f}");
            }
        }
    }
}

#[test]
fn normalize_hash_passes_digests_through() {
    let digest = "D6736136EA896C1BFDC553E0E86E702C70D060D805696CA3E4E9E0961353860A";
    for f in HashedField::ALL {
        let h = hash(f, &format!("  {digest}\n"), Some("us")).unwrap();
        assert_eq!(h.as_str(), digest.to_ascii_lowercase(), "{f}");
    }
    // 63 hex characters are a value, not a digest.
    let h = hash(EXTERNAL_ID, &digest[..63], None).unwrap();
    assert_eq!(h, Sha256Hex::of(&digest[..63]));
    // Invalid values are not hashed.
    assert!(matches!(
        hash(PH, "555-555-SHIP", Some("us")),
        Err(NormalizeError::Invalid { field: "ph", .. })
    ));
}

// ---------------------------------------------------------------------------------------
// Tables

#[test]
fn normalize_country_table_is_complete_and_consistent() {
    assert_eq!(COUNTRIES.len(), 250, "249 ISO-3166-1 codes + xk");
    let mut seen = BTreeSet::new();
    let mut previous = "";
    for &(a2, cc, name) in COUNTRIES {
        assert!(
            a2.len() == 2 && a2.bytes().all(|b| b.is_ascii_lowercase()),
            "{a2}"
        );
        assert!(a2 > previous, "sorted and unique: {a2}");
        previous = a2;
        assert!(seen.insert(a2));
        assert!(
            cc.is_empty() || (cc.len() <= 3 && cc.bytes().all(|b| b.is_ascii_digit())),
            "{a2}"
        );
        assert!(!cc.starts_with('0'), "{a2}");
        assert!(!name.is_empty());
        assert_eq!(lookup_country(name), Some(a2), "name {name}");
        assert_eq!(lookup_country(&a2.to_uppercase()), Some(a2));
    }
    let no_code: Vec<&str> = COUNTRIES
        .iter()
        .filter(|c| c.1.is_empty())
        .map(|c| c.0)
        .collect();
    assert_eq!(no_code, ["aq", "bv", "gs", "hm", "tf", "um"]);
    // Calling codes are prefix-free, so a number has at most one.
    let codes: BTreeSet<&str> = COUNTRIES
        .iter()
        .map(|c| c.1)
        .filter(|c| !c.is_empty())
        .collect();
    for a in &codes {
        for b in &codes {
            assert!(a == b || !b.starts_with(a), "{a} is a prefix of {b}");
        }
        assert_eq!(split_calling_code(&format!("{a}123456")), Some(*a));
    }
    for &(alias, code) in COUNTRY_ALIASES {
        assert_eq!(compact(alias), alias, "alias {alias} is compact");
        assert!(seen.contains(code), "alias {alias} → {code}");
        assert_eq!(lookup_country(alias), Some(code), "alias {alias}");
    }
}

#[test]
fn normalize_calling_codes() {
    for (country, code) in [
        ("us", Some("1")),
        ("US", Some("1")),
        (" Us ", Some("1")),
        ("ca", Some("1")),
        ("pr", Some("1")),
        ("jm", Some("1")),
        ("gb", Some("44")),
        ("uk", Some("44")),
        ("UK", Some("44")),
        ("je", Some("44")),
        ("de", Some("49")),
        ("fr", Some("33")),
        ("ru", Some("7")),
        ("kz", Some("7")),
        ("ie", Some("353")),
        ("in", Some("91")),
        ("cn", Some("86")),
        ("jp", Some("81")),
        ("au", Some("61")),
        ("br", Some("55")),
        ("mx", Some("52")),
        ("za", Some("27")),
        ("eg", Some("20")),
        ("fi", Some("358")),
        ("ax", Some("358")),
        ("va", Some("39")),
        ("xk", Some("383")),
        ("hk", Some("852")),
        ("tw", Some("886")),
        ("ae", Some("971")),
        ("aq", None),
        ("um", None),
        ("zz", None),
        ("", None),
        ("usa", None),
        ("United States", None),
        ("é", None),
    ] {
        assert_eq!(calling_code(country), code, "{country:?}");
    }
    // All NANP members.
    for nanp in [
        "us", "ca", "ag", "ai", "as", "bb", "bm", "bs", "dm", "do", "gd", "gu", "jm", "kn", "ky",
        "lc", "mp", "ms", "pr", "sx", "tc", "tt", "vc", "vg", "vi",
    ] {
        assert_eq!(calling_code(nanp), Some("1"), "{nanp}");
    }
    let nanp_count = COUNTRIES.iter().filter(|c| c.1 == "1").count();
    assert_eq!(nanp_count, 25);
}

#[test]
fn normalize_country_codes() {
    for (raw, want) in [
        ("US", Some("us")),
        ("us", Some("us")),
        (" Us ", Some("us")),
        ("U.S.", Some("us")),
        ("United States", Some("us")),
        ("united states of america", Some("us")),
        ("USA", Some("us")),
        ("U.S.A.", Some("us")),
        ("UK", Some("gb")),
        ("United Kingdom", Some("gb")),
        ("Great Britain", Some("gb")),
        ("CA", Some("ca")),
        ("Canada", Some("ca")),
        ("Germany", Some("de")),
        ("Deutschland", Some("de")),
        ("Côte d'Ivoire", Some("ci")),
        ("Cote d'Ivoire", Some("ci")),
        ("Ivory Coast", Some("ci")),
        ("South Korea", Some("kr")),
        ("North Korea", Some("kp")),
        ("Czech Republic", Some("cz")),
        ("Czechia", Some("cz")),
        ("Russian Federation", Some("ru")),
        ("Viet Nam", Some("vn")),
        ("Türkiye", Some("tr")),
        ("Turkey", Some("tr")),
        ("The Netherlands", Some("nl")),
        ("Åland Islands", Some("ax")),
        ("Kosovo", Some("xk")),
        ("XK", Some("xk")),
        ("Hong Kong", Some("hk")),
        ("ZZ", None),
        ("Atlantis", None),
        ("U", None),
        ("USAA", None),
        ("", None),
        ("  ", None),
        ("--", None),
    ] {
        assert_eq!(country_code(raw).as_deref(), want, "{raw:?}");
    }
}

#[test]
fn normalize_region_tables() {
    let us_codes: BTreeSet<&str> = US_STATES.iter().map(|r| r.1).collect();
    // 50 states + DC + AS, GU, MP, PR, VI, UM + FM, MH, PW + AA, AE, AP.
    assert_eq!(us_codes.len(), 50 + 1 + 6 + 3 + 3);
    let ca_codes: BTreeSet<&str> = CA_PROVINCES.iter().map(|r| r.1).collect();
    assert_eq!(ca_codes.len(), 13);
    for &(name, code) in US_STATES.iter().chain(CA_PROVINCES) {
        assert_eq!(compact(name), name, "{name} is compact");
        assert!(
            code.len() == 2 && code.bytes().all(|b| b.is_ascii_lowercase()),
            "{code}"
        );
        assert_eq!(normalize(ST, name, None).as_deref(), Ok(code), "{name}");
    }
}
