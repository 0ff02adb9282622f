//! Money bags: picking an amount together with the currency it is in, and adding amounts
//! exactly.
//!
//! Shopify gives every amount twice, in `*_set.shop_money` and `*_set.presentment_money`, each
//! with its own `currency_code`, and older payloads give only the un-suffixed amount, which is
//! in the shop's `currency`. An amount is only ever paired with the currency of its own bag.

use super::CurrencySource;
use super::wire::{Amount, MoneySet};
use crate::event::{Currency, Money};

/// The currencies an order names at its top level.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Currencies<'a> {
    /// `currency`: the shop's, which un-suffixed amounts are in.
    pub shop: Option<&'a str>,
    /// `presentment_currency`: the buyer's.
    pub presentment: Option<&'a str>,
}

/// The amount and its currency from the bag `source` asks for: `set`'s bag with its own
/// `currency_code` (falling back to the order's currency of that kind), or else the
/// un-suffixed `flat` amount with the shop currency. The flat amount is used for presentment
/// money only when the order names no other presentment currency. `None` when the bag is
/// missing or its amount or currency is malformed; a malformed bag never falls back to another.
pub(super) fn pick(
    set: Option<&MoneySet>,
    flat: Option<&Amount>,
    source: CurrencySource,
    currencies: Currencies<'_>,
) -> Option<(Money, Currency)> {
    let bag = set.and_then(|s| match source {
        CurrencySource::Shop => s.shop_money.as_ref(),
        CurrencySource::Presentment => s.presentment_money.as_ref(),
    });
    if let Some(amount) = bag.and_then(|b| b.amount.as_ref()) {
        let own = bag.and_then(|b| b.currency_code.as_deref());
        let fallback = match source {
            CurrencySource::Shop => currencies.shop,
            CurrencySource::Presentment => currencies.presentment,
        };
        return pair(amount, own.or(fallback)?);
    }
    let shop = currencies.shop?;
    if source == CurrencySource::Presentment
        && currencies
            .presentment
            .is_some_and(|p| !p.trim().eq_ignore_ascii_case(shop.trim()))
    {
        return None;
    }
    pair(flat?, shop)
}

fn pair(amount: &Amount, currency: &str) -> Option<(Money, Currency)> {
    Some((
        Money::parse(amount.as_str()).ok()?,
        Currency::parse(currency).ok()?,
    ))
}

/// Adds decimal amounts exactly (no floats): `["209.00", "1.5"]` → `"210.50"`. The result has
/// as many decimals as the most precise input. `None` for an empty list or on overflow.
pub(super) fn sum<'a>(amounts: impl IntoIterator<Item = &'a Money>) -> Option<Money> {
    let parts: Vec<(&str, &str)> = amounts
        .into_iter()
        .map(|m| m.as_str().split_once('.').unwrap_or((m.as_str(), "")))
        .collect();
    if parts.is_empty() {
        return None;
    }
    let scale = parts.iter().map(|(_, f)| f.len()).max().unwrap_or(0);
    let unit = 10u128.checked_pow(u32::try_from(scale).ok()?)?;
    let mut total: u128 = 0;
    for (int, frac) in parts {
        let int: u128 = int.parse().ok()?;
        let padded = format!("{frac:0<scale$}");
        let frac: u128 = if padded.is_empty() {
            0
        } else {
            padded.parse().ok()?
        };
        total = total.checked_add(int.checked_mul(unit)?.checked_add(frac)?)?;
    }
    let text = if scale == 0 {
        total.to_string()
    } else {
        format!("{}.{:0scale$}", total / unit, total % unit)
    };
    Money::parse(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shopify::wire::MoneyBag;

    fn m(s: &str) -> Money {
        Money::parse(s).unwrap()
    }

    fn set(shop: (&str, &str), presentment: (&str, &str)) -> MoneySet {
        let bag = |(a, c): (&str, &str)| {
            Some(MoneyBag {
                amount: Some(Amount::from(a)),
                currency_code: Some(c.to_owned()),
            })
        };
        MoneySet {
            shop_money: bag(shop),
            presentment_money: bag(presentment),
        }
    }

    #[test]
    fn sums_are_exact() {
        assert_eq!(sum([&m("209.00")]), Some(m("209.00")));
        assert_eq!(sum([&m("0.1"), &m("0.2")]), Some(m("0.3")));
        assert_eq!(sum([&m("1.5"), &m("2.25"), &m("3")]), Some(m("6.75")));
        assert_eq!(sum([&m("1450000.00"), &m("0.01")]), Some(m("1450000.01")));
        assert_eq!(sum([]), None);
        // Values too long to add exactly never get this far: money has at most 18 digits.
        assert!(Money::parse(&"9".repeat(40)).is_err());
        let largest = m(&"9".repeat(Money::MAX_DIGITS));
        // Their sum has 19 digits: not money either.
        assert_eq!(sum([&largest, &largest]), None);
    }

    #[test]
    fn a_bag_keeps_its_own_currency() {
        let s = set(("141.99", "CAD"), ("90.95", "EUR"));
        let cur = Currencies {
            shop: Some("USD"),
            presentment: Some("CAD"),
        };
        let shop = pick(Some(&s), None, CurrencySource::Shop, cur).unwrap();
        assert_eq!((shop.0.as_str(), shop.1.as_str()), ("141.99", "CAD"));
        let pres = pick(Some(&s), None, CurrencySource::Presentment, cur).unwrap();
        assert_eq!((pres.0.as_str(), pres.1.as_str()), ("90.95", "EUR"));
    }

    #[test]
    fn flat_amounts_are_shop_money() {
        let flat = Amount::from("398.00");
        let single = Currencies {
            shop: Some("USD"),
            presentment: None,
        };
        let multi = Currencies {
            shop: Some("USD"),
            presentment: Some("EUR"),
        };
        let got = pick(None, Some(&flat), CurrencySource::Presentment, single).unwrap();
        assert_eq!((got.0.as_str(), got.1.as_str()), ("398.00", "USD"));
        assert!(pick(None, Some(&flat), CurrencySource::Shop, multi).is_some());
        assert_eq!(
            pick(None, Some(&flat), CurrencySource::Presentment, multi),
            None
        );
        assert_eq!(
            pick(
                None,
                Some(&flat),
                CurrencySource::Shop,
                Currencies::default()
            ),
            None
        );
    }

    #[test]
    fn a_malformed_bag_does_not_fall_back_to_another() {
        let s = set(("12,50", "EUR"), ("12.50", "EUR"));
        let flat = Amount::from("12.50");
        let cur = Currencies {
            shop: Some("EUR"),
            presentment: Some("EUR"),
        };
        assert_eq!(pick(Some(&s), Some(&flat), CurrencySource::Shop, cur), None);
    }
}
