// One jest project per kind of test: CI runs them all, a developer can pick one with --selectProjects.
const common = {
  preset: 'ts-jest',
  testEnvironment: 'node',
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: 'tsconfig.json', diagnostics: false }] },
};
module.exports = {
  reporters: ['default', '<rootDir>/test/support/summary-reporter.js'],
  projects: [
    { ...common, displayName: 'unit', testMatch: ['<rootDir>/test/unit/**/*.test.ts'] },
    { ...common, displayName: 'native', testMatch: ['<rootDir>/test/native/**/*.test.ts', '<rootDir>/test/ns/**/*.test.ts'] },
    { ...common, displayName: 'container', testMatch: ['<rootDir>/test/container/**/*.test.ts'] },
    { ...common, displayName: 'reliability', testMatch: ['<rootDir>/test/reliability/**/*.test.ts'] },
  ],
};
