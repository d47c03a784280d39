"""Security at the gateway's and reactor's edges (DESIGN §8, PFAP §11): authentication,
transport security, authorization, rate limits, audit, data protection. The rules
themselves are pure and live in ``packetflow.protocol``."""
