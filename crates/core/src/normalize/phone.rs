//! `ph`: phone numbers to E.164 digits without the `+`.
//!
//! See the module documentation of [`crate::normalize`] for the rules. Everything here works
//! on ASCII digit strings, so byte slicing is always on character boundaries.

use super::countries::COUNTRIES;

/// Characters that may separate digit groups and are dropped. `(` and `)` are handled
/// separately because `(0)` after an international prefix means "drop this trunk zero".
const SEPARATORS: &[char] = &[
    '-', '.', '/', '\u{2010}', '\u{2011}', '\u{2012}', '\u{2013}', '\u{2014}', '\u{2015}',
    '\u{2212}',
];

/// Shortest and longest E.164 number (country code included).
const E164_LEN: std::ops::RangeInclusive<usize> = 8..=15;

/// A bare digit string of this many digits, starting with a known calling code, is taken as
/// international when there is no country hint.
const BARE_INTERNATIONAL_LEN: std::ops::RangeInclusive<usize> = 11..=15;

/// How a national number of a country marks "this is a national number".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trunk {
    /// No trunk prefix; a leading `0` is part of the number (Italy, San Marino, Vatican,
    /// Côte d'Ivoire) or never occurs (NANP, where the long-distance `1` equals the
    /// country code and is resolved by length).
    None,
    /// A single leading `0` (most of the world).
    Zero,
    /// A leading `8` on an 11-digit number (Russia, Kazakhstan).
    Eight,
    /// A leading `06` (Hungary).
    ZeroSix,
}

fn trunk(country: &str, calling_code: &str) -> Trunk {
    match country {
        "it" | "sm" | "va" | "ci" => Trunk::None,
        "ru" | "kz" => Trunk::Eight,
        "hu" => Trunk::ZeroSix,
        _ if calling_code == "1" => Trunk::None,
        _ => Trunk::Zero,
    }
}

/// Lengths of the national significant number (the digits after the country code) for
/// calling codes whose numbering plan has few lengths. Used to validate and to decide
/// whether a bare number already carries its country code. Codes not listed accept any
/// length (the overall 8–15 E.164 check still applies).
pub(super) fn nsn_lengths(calling_code: &str) -> Option<(usize, usize)> {
    Some(match calling_code {
        "1" => (10, 10),  // NANP
        "7" => (10, 10),  // Russia, Kazakhstan
        "27" => (9, 9),   // South Africa
        "30" => (10, 10), // Greece
        "31" => (9, 9),   // Netherlands
        "32" => (8, 9),   // Belgium
        "33" => (9, 9),   // France
        "34" => (9, 9),   // Spain
        "36" => (8, 9),   // Hungary
        "41" => (9, 9),   // Switzerland
        "44" => (7, 10),  // United Kingdom, Guernsey, Jersey, Isle of Man
        "45" => (8, 8),   // Denmark
        "47" => (8, 8),   // Norway
        "48" => (9, 9),   // Poland
        "52" => (10, 10), // Mexico
        "55" => (10, 11), // Brazil
        "61" => (9, 9),   // Australia
        "64" => (8, 10),  // New Zealand
        "65" => (8, 8),   // Singapore
        "81" => (9, 10),  // Japan
        "91" => (10, 10), // India
        "351" => (9, 9),  // Portugal
        "353" => (7, 9),  // Ireland
        "420" => (9, 9),  // Czechia
        "421" => (9, 9),  // Slovakia
        "852" => (8, 8),  // Hong Kong
        "971" => (8, 9),  // United Arab Emirates
        _ => return None,
    })
}

/// The calling code that `digits` starts with. Calling codes are prefix-free, so at most one
/// matches.
pub(super) fn split_calling_code(digits: &str) -> Option<&'static str> {
    // Every phone passes here: the codes are a set built once, not a table scan per prefix.
    static CODES: std::sync::OnceLock<std::collections::HashSet<&'static str>> =
        std::sync::OnceLock::new();
    let codes = CODES.get_or_init(|| {
        COUNTRIES
            .iter()
            .map(|&(_, cc, _)| cc)
            .filter(|cc| !cc.is_empty())
            .collect()
    });
    (1..=3).find_map(|n| codes.get(digits.get(..n)?).copied())
}

fn calling_code_of(country: &str) -> Option<&'static str> {
    super::by_code(country)
        .map(|&(_, cc, _)| cc)
        .filter(|cc| !cc.is_empty())
}

/// Validate the national significant number for a calling code.
fn check_nsn(calling_code: &str, nsn: &str) -> Result<(), String> {
    let Some(&first) = nsn.as_bytes().first() else {
        return Err("has no digits after the country code or trunk prefix".into());
    };
    if let Some((lo, hi)) = nsn_lengths(calling_code)
        && !(lo..=hi).contains(&nsn.len())
    {
        let expected = if lo == hi {
            lo.to_string()
        } else {
            format!("{lo} to {hi}")
        };
        return Err(format!(
            "has {} digits after country code {calling_code}; expected {expected}",
            nsn.len()
        ));
    }
    if calling_code == "1" && matches!(first, b'0' | b'1') {
        return Err("north american area codes cannot start with 0 or 1".into());
    }
    Ok(())
}

/// `digits` is country code + national number.
fn international(digits: &str) -> Result<String, String> {
    let cc = split_calling_code(digits)
        .ok_or_else(|| "does not start with a known country calling code".to_string())?;
    check_nsn(cc, &digits[cc.len()..])?;
    Ok(digits.to_string())
}

/// `digits` has no international prefix; `country` (with calling code `cc`) is the hint.
fn national(country: &str, cc: &str, digits: &str) -> Result<String, String> {
    let stripped = match trunk(country, cc) {
        Trunk::None => None,
        Trunk::Zero => digits.strip_prefix('0'),
        Trunk::Eight if digits.len() == 11 => digits.strip_prefix('8'),
        Trunk::Eight => None,
        Trunk::ZeroSix => digits.strip_prefix("06"),
    };
    if let Some(nsn) = stripped {
        // A trunk prefix proves the number is national.
        check_nsn(cc, nsn)?;
        return Ok(format!("{cc}{nsn}"));
    }
    if let Some(rest) = digits.strip_prefix(cc)
        && check_nsn(cc, rest).is_ok()
    {
        // Starts with the country code and the length says it includes it.
        return Ok(digits.to_string());
    }
    // Otherwise it must be a national number of the hinted country. A number that is not
    // (a typo, or a foreign number written without `+`) is dropped rather than guessed: a
    // guess could match an unrelated person.
    check_nsn(cc, digits)?;
    Ok(format!("{cc}{digits}"))
}

/// Normalise a trimmed, non-empty phone number. `country` is a resolved lower-case alpha-2
/// hint.
pub(super) fn normalize_phone(s: &str, country: Option<&str>) -> Result<String, String> {
    let mut plus = false;
    let mut digits = String::with_capacity(s.len());
    // Digits and parentheses in order, to spot "(0)".
    let mut marks: Vec<char> = Vec::new();
    // Index in `digits` of a zero written as "(0)".
    let mut paren_zero: Option<usize> = None;
    for c in s.chars() {
        match c {
            '0'..='9' => {
                digits.push(c);
                marks.push(c);
            }
            '+' => {
                if plus || !digits.is_empty() {
                    return Err("has a '+' that is not before the first digit".into());
                }
                plus = true;
            }
            '(' | ')' => {
                marks.push(c);
                if c == ')' && paren_zero.is_none() && marks.ends_with(&['(', '0', ')']) {
                    paren_zero = Some(digits.len() - 1);
                }
            }
            c if c.is_whitespace() || SEPARATORS.contains(&c) => {}
            c if c.is_alphabetic() => return Err("contains letters".into()),
            c if c.is_numeric() => return Err("contains non-ascii digits".into()),
            _ => return Err("contains a character that is not a digit or separator".into()),
        }
    }
    if digits.is_empty() {
        return Err("contains no digits".into());
    }
    let hint = country.and_then(|c| calling_code_of(c).map(|cc| (c, cc)));

    let intl_prefix = if plus {
        Some(0)
    } else if digits.starts_with("00") {
        Some(2)
    } else if hint.is_some_and(|(_, cc)| cc == "1") && digits.starts_with("011") {
        // The NANP international call prefix.
        Some(3)
    } else {
        None
    };

    let out = match (intl_prefix, hint) {
        (Some(prefix), _) => {
            let rest: String = digits
                .char_indices()
                .filter(|&(i, _)| i >= prefix && Some(i) != paren_zero)
                .map(|(_, c)| c)
                .collect();
            international(&rest)?
        }
        (None, Some((country, cc))) => national(country, cc, &digits)?,
        (None, None) => {
            const NO_CODE: &str = "has no country code and there is no country hint to add one";
            if !BARE_INTERNATIONAL_LEN.contains(&digits.len()) {
                return Err(NO_CODE.into());
            }
            international(&digits).map_err(|_| NO_CODE.to_string())?
        }
    };
    if !E164_LEN.contains(&out.len()) {
        return Err(format!(
            "has {} digits with the country code; expected 8 to 15",
            out.len()
        ));
    }
    Ok(out)
}
