"""gitd: a self-hosted git-push PaaS."""

import warnings

from cryptography.utils import CryptographyDeprecationWarning

# asyncssh still names cryptography's DSA classes (for DSA keys, which gitd
# never accepts): every import printed ten lines of this warning on every
# `gitd` call. Only that category, only from asyncssh's own modules.
warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning, module=r"asyncssh(\.|$)")

__version__ = "0.1.0"
