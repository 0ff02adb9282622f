//! Pinterest's normalisation of every hashed field, with and without a country: it never
//! panics, and a normalised value normalises to itself, so a value hashed once and a value
//! hashed again by another path give Pinterest the same hash. (A normalised phone number is
//! digits with the calling code but no `+`; it is read again as international, `+` first,
//! since without it a country hint would add a second calling code.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use pincapi_core::normalize::{HashedField, normalize};

fuzz_target!(|input: &[u8]| {
    let Some((&which, rest)) = input.split_first() else {
        return;
    };
    let Ok(raw) = std::str::from_utf8(rest) else {
        return;
    };
    let field = HashedField::ALL[usize::from(which) % HashedField::ALL.len()];
    for country in [
        None,
        Some("US"),
        Some("GB"),
        Some("DE"),
        Some("FR"),
        Some("CA"),
    ] {
        if let Ok(once) = normalize(field, raw, country) {
            let again = if field == HashedField::Ph {
                format!("+{once}")
            } else {
                once.clone()
            };
            let twice = normalize(field, &again, country);
            assert_eq!(
                twice.as_ref(),
                Ok(&once),
                "{field:?} {country:?}: {raw:?} -> {once:?} -> {twice:?}"
            );
        }
    }
});
