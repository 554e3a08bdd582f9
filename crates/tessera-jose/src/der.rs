//! Just enough DER reading to lift key components out of PKCS#8 and SubjectPublicKeyInfo
//! structures that the crypto library produced or already validated. Not a general ASN.1 parser.

use crate::error::Error;

pub(crate) const SEQUENCE: u8 = 0x30;
pub(crate) const INTEGER: u8 = 0x02;
pub(crate) const BIT_STRING: u8 = 0x03;
pub(crate) const OCTET_STRING: u8 = 0x04;

pub(crate) const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
pub(crate) const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
pub(crate) const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
pub(crate) const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];
const OID: u8 = 0x06;

const BAD: Error = Error::InvalidKey("malformed DER structure");

/// Reads one element with the expected tag; returns its contents and what follows it.
pub(crate) fn read(input: &[u8], tag: u8) -> Result<(&[u8], &[u8]), Error> {
    let (&t, rest) = input.split_first().ok_or(BAD)?;
    if t != tag {
        return Err(BAD);
    }
    let (&first, mut rest) = rest.split_first().ok_or(BAD)?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return Err(BAD);
        }
        let mut len = 0usize;
        for &b in &rest[..n] {
            len = (len << 8) | usize::from(b);
        }
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return Err(BAD);
    }
    Ok(rest.split_at(len))
}

/// An INTEGER's magnitude without leading zero octets (JWK "Base64urlUInt" form).
pub(crate) fn read_uint(input: &[u8]) -> Result<(&[u8], &[u8]), Error> {
    let (mut value, rest) = read(input, INTEGER)?;
    while let [0, tail @ ..] = value {
        value = tail;
    }
    Ok((value, rest))
}

/// The key type of a SubjectPublicKeyInfo or PKCS#8 AlgorithmIdentifier.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum KeyType {
    Rsa,
    P256,
    Ed25519,
}

fn algorithm_identifier(input: &[u8]) -> Result<(KeyType, &[u8]), Error> {
    let (alg, rest) = read(input, SEQUENCE)?;
    let (oid, params) = read(alg, OID)?;
    let kind = if oid == OID_RSA {
        KeyType::Rsa
    } else if oid == OID_ED25519 {
        KeyType::Ed25519
    } else if oid == OID_EC {
        let (curve, _) = read(params, OID)?;
        if curve != OID_P256 {
            return Err(Error::Unsupported("elliptic curve other than P-256"));
        }
        KeyType::P256
    } else {
        return Err(Error::Unsupported("key type"));
    };
    Ok((kind, rest))
}

/// Splits a SubjectPublicKeyInfo into its key type and the subjectPublicKey bits.
pub(crate) fn spki(der: &[u8]) -> Result<(KeyType, &[u8]), Error> {
    let (body, _) = read(der, SEQUENCE)?;
    let (kind, rest) = algorithm_identifier(body)?;
    let (bits, _) = read(rest, BIT_STRING)?;
    match bits.split_first() {
        Some((0, key)) => Ok((kind, key)),
        _ => Err(BAD),
    }
}

/// Splits a PKCS#8 PrivateKeyInfo into its key type and the privateKey octets.
pub(crate) fn pkcs8(der: &[u8]) -> Result<(KeyType, &[u8]), Error> {
    let (body, _) = read(der, SEQUENCE)?;
    let (_version, rest) = read(body, INTEGER)?;
    let (kind, rest) = algorithm_identifier(rest)?;
    let (key, _) = read(rest, OCTET_STRING)?;
    Ok((kind, key))
}

/// The eight integers of a two-prime PKCS#1 RSAPrivateKey: n, e, d, p, q, dp, dq, qi.
pub(crate) fn rsa_private_components(key: &[u8]) -> Result<[&[u8]; 8], Error> {
    let (body, _) = read(key, SEQUENCE)?;
    let (_version, mut rest) = read(body, INTEGER)?;
    let mut out: [&[u8]; 8] = [&[]; 8];
    for slot in &mut out {
        let (v, r) = read_uint(rest)?;
        *slot = v;
        rest = r;
    }
    Ok(out)
}
