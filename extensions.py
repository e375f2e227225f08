"""Flask extension objects, created unbound here and bound to the app in `create_app`."""

from flask_jwt_extended import JWTManager
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_migrate import Migrate
from flask_smorest import Api

api = Api()
jwt = JWTManager()
limiter = Limiter(key_func=get_remote_address)
migrate = Migrate()

# documents the bearer token on every protected operation
BEARER = [{"bearerAuth": []}]
