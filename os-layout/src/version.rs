//! The OS image version: the build's time, not the kernel's version, so two
//! builds with the same kernel still order. `YYYYMMDD.HHMMSS` (UTC): fixed
//! width, so comparing the strings compares the times, and systemd's version
//! comparison (strverscmp_improved: numeric fields) orders them the same way.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImageVersion(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error(
        "image version {0:?}: expected YYYYMMDD.HHMMSS (UTC build time), e.g. 20261201.202300"
    )]
    Format(String),
    #[error("epoch {0} is outside the years 1970-9999")]
    Epoch(i64),
}

impl ImageVersion {
    /// The version of an image built at `epoch` (seconds since 1970, UTC).
    pub fn from_epoch(epoch: i64) -> Result<ImageVersion, VersionError> {
        let t = time::OffsetDateTime::from_unix_timestamp(epoch)
            .map_err(|_| VersionError::Epoch(epoch))?;
        if !(1970..=9999).contains(&t.year()) {
            return Err(VersionError::Epoch(epoch));
        }
        Ok(ImageVersion(format!(
            "{:04}{:02}{:02}.{:02}{:02}{:02}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        )))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ImageVersion {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let ok = b.len() == 15
            && b[8] == b'.'
            && b.iter()
                .enumerate()
                .all(|(i, c)| i == 8 || c.is_ascii_digit());
        if ok {
            Ok(ImageVersion(s.to_string()))
        } else {
            Err(VersionError::Format(s.to_string()))
        }
    }
}

impl fmt::Display for ImageVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_epochs_order_by_time() {
        let a = ImageVersion::from_epoch(1_764_620_580).unwrap();
        assert_eq!(a.as_str(), "20251201.202300");
        let b = ImageVersion::from_epoch(1_764_620_581).unwrap();
        assert!(b > a);
        let c = ImageVersion::from_epoch(1_000_000_000).unwrap();
        assert_eq!(c.as_str(), "20010909.014640");
        assert!(c < a);
        assert!(ImageVersion::from_epoch(-1).is_err());
    }

    #[test]
    fn parse_accepts_only_the_fixed_form() {
        for good in ["20261201.202300", "19700101.000000"] {
            assert_eq!(good.parse::<ImageVersion>().unwrap().as_str(), good);
        }
        for bad in [
            "",
            "2026120.202300",
            "20261201-202300",
            "20261201.20230a",
            "6.12.117",
            "20261201.202300+3",
        ] {
            assert!(bad.parse::<ImageVersion>().is_err(), "{bad}");
        }
    }
}
