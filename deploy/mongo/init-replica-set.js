// Run by compose's mongo-init service (mongosh, authenticated as the root user) once MongoDB
// answers. It initiates the single-node replica set, waits until the node has elected itself
// primary, and creates postgate's own user, with readWrite on postgate's database only. Every
// step is safe to repeat, so the service can run on every `docker compose up`.
const replicaSet = 'rs0';
const host = process.env.MONGO_REPLICA_HOST || 'mongo:27017';
const dbName = process.env.POSTGATE_MONGO_DB || 'postgate';
const user = process.env.MONGO_POSTGATE_USER || 'postgate';
const pwd = process.env.MONGO_POSTGATE_PASSWORD;
if (!pwd) {
  throw new Error('MONGO_POSTGATE_PASSWORD is not set');
}

try {
  rs.status();
} catch (e) {
  // Code 94 (NotYetInitialized) is the only error that means "initiate me"; anything else is real.
  if (e.code !== 94 && e.codeName !== 'NotYetInitialized') {
    throw e;
  }
  rs.initiate({ _id: replicaSet, members: [{ _id: 0, host: host }] });
}

// A single member elects itself within seconds; postgate writes with majority concern and needs
// a primary, so the service only succeeds once there is one.
for (let i = 0; !db.hello().isWritablePrimary; i++) {
  if (i >= 120) {
    throw new Error('no primary 60 s after rs.initiate');
  }
  sleep(500);
}

const admin = db.getSiblingDB('admin');
const roles = [{ role: 'readWrite', db: dbName }];
if (admin.getUser(user) === null) {
  admin.createUser({ user: user, pwd: pwd, roles: roles });
} else {
  admin.updateUser(user, { pwd: pwd, roles: roles });
}
print(`replica set ${replicaSet} has a primary; user ${user} may read and write ${dbName}`);
