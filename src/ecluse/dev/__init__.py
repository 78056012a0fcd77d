"""What only the embedded stack and the tests use: the embedded slapd
(:mod:`.ldapserver`), the stack ``ecluse up`` runs (:mod:`.stack`), demo
data and the demo warehouse (:mod:`.demo`, :mod:`.warehouse`) and test
helpers (:mod:`.testing`). Production code never imports it."""
