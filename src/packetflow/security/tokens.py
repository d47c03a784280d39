"""JWT bearer tokens (PFAP §11.1.2) verified with PyJWT against the one key and the
algorithms the operator configured; everything else (``alg: none``, another algorithm,
a bad signature, exp/nbf/iss/aud) is PF401."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from ..protocol.authentication import principal_from_claims
from ..protocol.errors import AuthenticationFailed
from ..protocol.principals import Principal

DEFAULT_ISSUER = "packetflow-auth"
DEFAULT_AUDIENCE = "packetflow-cluster"
HMAC_ALGORITHMS = ("HS256",)
PUBLIC_KEY_ALGORITHMS = ("RS256", "ES256")
# Clock skew tolerated on exp/nbf between the token issuer and this gateway.
LEEWAY_S = 5


@dataclass(frozen=True, slots=True)
class JwtVerifier:
    key: Any
    algorithms: tuple[str, ...]
    issuer: str = DEFAULT_ISSUER
    audience: str = DEFAULT_AUDIENCE

    @classmethod
    def from_files(cls, secret_file: str | None, public_key_file: str | None,
                   issuer: str, audience: str) -> JwtVerifier | None:  # fmt: skip
        if secret_file and public_key_file:
            raise ValueError("give --jwt-secret-file or --jwt-public-key-file, not both")
        if secret_file:
            return cls(Path(secret_file).read_bytes().strip(), HMAC_ALGORITHMS, issuer, audience)
        if public_key_file:
            from cryptography.hazmat.primitives.asymmetric import ec, rsa
            from cryptography.hazmat.primitives.serialization import load_pem_public_key

            key = load_pem_public_key(Path(public_key_file).read_bytes())
            # Only the algorithm family of the configured key: an RSA key never verifies
            # an HS256 token made with the public key as the secret (algorithm confusion).
            if isinstance(key, rsa.RSAPublicKey):
                algorithms: tuple[str, ...] = ("RS256",)
            elif isinstance(key, ec.EllipticCurvePublicKey):
                algorithms = ("ES256",)
            else:
                raise ValueError(f"{public_key_file}: only RSA and EC P-256 keys are supported")
            return cls(key, algorithms, issuer, audience)
        return None

    def verify(self, token: str) -> tuple[Principal, float]:
        """The token's principal and its expiry (Unix seconds); PF401 on any defect."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise AuthenticationFailed(f"Malformed JWT: {exc}", field="Authorization",
                                       validation_rule="jwt_format") from None  # fmt: skip
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise AuthenticationFailed(
                f"JWT algorithm {alg!r} is not accepted here (configured: "
                f"{', '.join(self.algorithms)})",
                field="Authorization", validation_rule="jwt_algorithm",
            )  # fmt: skip
        try:
            claims = jwt.decode(
                token, self.key, algorithms=list(self.algorithms), issuer=self.issuer,
                audience=self.audience, leeway=LEEWAY_S,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )  # fmt: skip
        except jwt.ExpiredSignatureError:
            raise _bad("JWT has expired", "jwt_exp") from None
        except jwt.ImmatureSignatureError:
            raise _bad("JWT is not valid yet (nbf)", "jwt_nbf") from None
        except jwt.InvalidIssuerError:
            raise _bad("JWT issuer is not accepted", "jwt_iss") from None
        except jwt.InvalidAudienceError:
            raise _bad("JWT audience is not this cluster", "jwt_aud") from None
        except jwt.MissingRequiredClaimError as exc:
            raise _bad(f"JWT lacks the {exc.claim!r} claim", "jwt_required") from None
        except jwt.InvalidSignatureError:
            raise _bad("JWT signature does not verify", "jwt_signature") from None
        except jwt.InvalidTokenError as exc:
            raise _bad(f"Invalid JWT: {exc}", "jwt_invalid") from None
        return principal_from_claims(claims), float(claims["exp"])


def _bad(message: str, rule: str) -> AuthenticationFailed:
    return AuthenticationFailed(message, field="Authorization", validation_rule=rule)
