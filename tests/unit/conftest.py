# the fixtures every unit test may ask for, defined with the other shared fakes
from tests.fakes import fake, store  # noqa: F401
